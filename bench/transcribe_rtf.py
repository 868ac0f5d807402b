"""Real-time factor and peak memory of ``asr transcribe`` as a user runs it (a fresh process each time).

    python -m bench.transcribe_rtf --model recipes/mini/exp/<tag>/model --out bench/out [AUDIO...]

Two runs over the same files: one file per process at ``--batch-size 1`` (RTF of a single request,
model loading excluded by the command's own timer) and all files in one process at
``--batch-size 8`` (a batch of files). The numbers come from the summary line ``asr transcribe``
prints on stderr (audio seconds, wall seconds, real-time factor, peak RSS).
Defaults to the human speech of pocketsphinx-testdata (librivox, cards), alsa-utils and the asterisk
vm-* prompts (G.722).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from asr.io_utils import write_text_atomic

DEFAULT_AUDIO = [
    Path("/usr/share/pocketsphinx/test/data/librivox"),
    Path("/usr/share/pocketsphinx/test/data/cards"),
    Path("/usr/share/sounds/alsa"),
]
IVR_AUDIO = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
SUMMARY = re.compile(r"([\d.]+) s of audio in ([\d.]+) s \(real-time factor ([\d.]+)\), peak memory (\d+) MiB")


def transcribe(model: Path, audio: list[str], batch_size: int, beam_size: int, out_dir: Path) -> dict:
    cmd = [
        str(Path(sys.executable).parent / "asr"),
        "transcribe",
        *(["--model", str(model)] if model else []),
        "-o",
        str(out_dir),
        "-f",
        "txt",
        "--batch-size",
        str(batch_size),
        "--beam-size",
        str(beam_size),
        *audio,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    m = SUMMARY.search(proc.stderr)
    if proc.returncode != 0 or not m:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return {"audio_s": float(m[1]), "wall_s": float(m[2]), "rtf": float(m[3]), "peak_mib": int(m[4])}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("audio", nargs="*", help="files or dirs (default: pocketsphinx-testdata and alsa-utils speech)")
    p.add_argument("--model", type=Path, help="model dir for asr transcribe (exported or stage 1; default: the shipped model)")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("bench/out"))
    args = p.parse_args(argv)
    roots = [Path(a) for a in args.audio] or [d for d in DEFAULT_AUDIO if d.is_dir()]
    files = sorted(str(f) for r in roots for f in ([r] if r.is_file() else r.rglob("*.wav")))
    if not args.audio and IVR_AUDIO.is_dir():  # and the voicemail prompts of the test_real_ivr set
        files += sorted(str(f) for f in IVR_AUDIO.glob("vm-*.g722"))
    if not files:
        raise SystemExit("no audio files to transcribe")
    with tempfile.TemporaryDirectory() as tmp:
        single = [transcribe(args.model, [f], 1, args.beam_size, Path(tmp)) for f in files]
        batch = transcribe(args.model, files, 8, args.beam_size, Path(tmp))
    audio = sum(r["audio_s"] for r in single)
    result = {
        "model": str(args.model),
        "files": len(files),
        "audio_s": round(audio, 1),
        "beam_size": args.beam_size,
        "batch1": {"rtf": round(sum(r["wall_s"] for r in single) / audio, 4), "peak_mib": max(r["peak_mib"] for r in single)},
        "batch8": {"rtf": batch["rtf"], "peak_mib": batch["peak_mib"]},
    }
    write_text_atomic(args.out / "transcribe.json", json.dumps(result, indent=2) + "\n")
    md = (
        "| asr transcribe | files | audio (s) | RTF | peak memory (MiB) |\n|---|---|---|---|---|\n"
        f"| one file per process, --batch-size 1 | {len(files)} | {result['audio_s']} | {result['batch1']['rtf']} | {result['batch1']['peak_mib']} |\n"
        f"| all files, --batch-size 8 | {len(files)} | {result['audio_s']} | {result['batch8']['rtf']} | {result['batch8']['peak_mib']} |\n"
    )
    write_text_atomic(args.out / "transcribe.md", md)
    print(md)
    return result


if __name__ == "__main__":
    main()
