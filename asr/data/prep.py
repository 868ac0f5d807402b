"""What every corpus's data preparation shares: audio durations from file headers, and writing one
Kaldi data dir atomically (built under a temp name, validated, then renamed into place).

    utts = {utt: (audio path, speaker, transcript)}
    durs = audio_durations([path for path, _, _ in utts.values()], nj=4)
    stats = write_data_dir(Path("data/train"), utts, durs)

Utterances whose audio cannot be read (or has no samples) are left out and counted; the first few
are named in the log.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import shutil
from pathlib import Path

import soundfile as sf

from asr.data.datadir import DataDir, validate_data_dir
from asr.io_utils import write_table

log = logging.getLogger(__name__)


def _duration(path: str) -> tuple[str, float | str]:
    try:
        info = sf.info(path)
        return path, info.frames / info.samplerate
    except Exception as exc:  # noqa: BLE001 - reported per file
        return path, f"{type(exc).__name__}: {exc}"


def audio_durations(paths: list[str], nj: int = 1) -> dict[str, float | str]:
    """Audio path -> duration in seconds, or the reason it cannot be read (from the file headers)."""
    if nj > 1 and len(paths) > 200:
        with mp.Pool(nj) as pool:
            return dict(pool.imap_unordered(_duration, paths, chunksize=256))
    return dict(map(_duration, paths))


def write_data_dir(
    out: Path, utts: dict[str, tuple[str, str, str]], durs: dict[str, float | str], spk2gender: dict[str, str] | None = None
) -> dict:
    """Write ``out`` (wav.scp, text, utt2spk, spk2utt, utt2dur, and spk2gender when every speaker has
    one) atomically; returns counts. Raises ValueError when no utterance is left."""
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    d = DataDir(tmp)
    utt2dur, unreadable = {}, {}
    for utt, (path, spk, text) in utts.items():
        dur = durs[path]
        if isinstance(dur, str) or dur <= 0:
            unreadable[utt] = dur if isinstance(dur, str) else "no samples"
            continue
        d.wav_scp[utt], d.utt2spk[utt], d.text[utt] = path, spk, text
        utt2dur[utt] = f"{dur:.3f}"
    if not d.utt2spk:
        raise ValueError(f"{out.name}: no readable utterance with a transcript")
    d.write()
    write_table(tmp / "utt2dur", utt2dur)
    if spk2gender is not None:
        genders = {spk: spk2gender.get(spk, "") for spk in set(d.utt2spk.values())}
        unknown = sorted(s for s, g in genders.items() if not g)
        if unknown:
            log.warning("%s: %d speakers without a gender (first %s): no spk2gender", out.name, len(unknown), unknown[0])
        else:
            write_table(tmp / "spk2gender", genders)
    validate_data_dir(tmp)
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    for utt, why in sorted(unreadable.items())[:5]:
        log.warning("%s: skipped %s: unreadable audio (%s)", out.name, utt, why)
    hours = sum(float(v) for v in utt2dur.values()) / 3600
    speakers = len(set(d.utt2spk.values()))
    log.info("%s: %d utterances, %d speakers, %.2f h", out, len(d.utt2spk), speakers, hours)
    return {"utterances": len(d.utt2spk), "speakers": speakers, "hours": round(hours, 3), "unreadable_audio": len(unreadable)}
