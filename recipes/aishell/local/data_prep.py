#!/usr/bin/env python3
"""Stage 0 of recipes/aishell: Kaldi data dirs from the official AISHELL-1 layout (openslr.org/33).

    python local/data_prep.py --corpus-dir /data --data data [--sets train dev test] [--nj 4]

``--corpus-dir`` is the folder ``data_aishell.tgz`` was unpacked in (it holds ``data_aishell/``;
the ``data_aishell`` folder itself is accepted too; a ``data_aishell.tgz`` there without the
folder is unpacked first)::

    data_aishell/transcript/aishell_transcript_v0.8.txt   lines "BAC009S0002W0122 而 对 楼市 成交 ..."
    data_aishell/wav/<set>/<speaker>/<utt>.wav            set = train | dev | test, speaker = S0002, ...

The release ships ``data_aishell/wav/<speaker>.tar.gz`` per speaker (members
``<set>/<speaker>/<utt>.wav``): like Kaldi's ``download_and_untar.sh`` they are unpacked into
``data_aishell/wav/`` first. Unpacking is resumable: each archive goes to a temp folder, its
files are renamed into place, then ``wav/.<archive>.done`` is written; an archive with that
marker is not unpacked again. ``--remove-archives`` deletes each archive once unpacked.

Writes ``<data>/{train,dev,test}`` with ``wav.scp`` (absolute paths), ``text`` (the transcript
with its word-separating spaces removed: character-level, for CER), ``utt2spk`` and ``spk2utt``
(speaker = the utterance id up to the speaker folder's name, ``BAC009S0002``, so that speaker
ids prefix utterance ids as the data dir validator demands), ``utt2dur``; and
``<data>/local/data_prep.json`` with the counts. Audio without a transcript line and transcript
lines without audio are skipped and counted. Each data dir is built under a temp name,
validated, then renamed into place.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tarfile
from pathlib import Path

try:
    import asr  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


from asr.data.prep import audio_durations, write_data_dir  # noqa: E402
from asr.io_utils import write_text_atomic  # noqa: E402

log = logging.getLogger("aishell_data_prep")

SETS = ("train", "dev", "test")
TRANSCRIPT = Path("transcript") / "aishell_transcript_v0.8.txt"


class LayoutError(RuntimeError):
    """The corpus dir does not have AISHELL-1's layout; the message names the path."""


def _extract(archive: Path, dest: Path) -> None:
    """Unpack ``archive`` into ``dest`` through a temp folder; files are renamed into place."""
    tmp = dest / f".untar-{archive.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")  # refuses absolute paths, '..' and links out of tmp
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise LayoutError(f"{archive}: cannot unpack ({exc}); download it again") from None
    for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
        target = dest / src.relative_to(tmp)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, target)
    shutil.rmtree(tmp, ignore_errors=True)


def find_root(corpus_dir: Path) -> Path:
    """``<corpus_dir>/data_aishell`` (unpacking ``data_aishell.tgz`` when only the archive is there)."""
    if not corpus_dir.is_dir():
        raise LayoutError(f"--corpus-dir {corpus_dir}: not a directory")
    for root in (corpus_dir / "data_aishell", corpus_dir):
        if (root / TRANSCRIPT).is_file() or (root / "wav").is_dir():
            return root
    tgz = corpus_dir / "data_aishell.tgz"
    if tgz.is_file():
        log.info("unpacking %s", tgz)
        _extract(tgz, corpus_dir)
        if (corpus_dir / "data_aishell").is_dir():
            return corpus_dir / "data_aishell"
        raise LayoutError(f"{tgz}: unpacked, but it held no data_aishell/ folder")
    raise LayoutError(
        f"--corpus-dir {corpus_dir}: expected {corpus_dir}/data_aishell/{TRANSCRIPT} and "
        f"{corpus_dir}/data_aishell/wav/ (or data_aishell.tgz from openslr.org/33)"
    )


def untar_speakers(wav_dir: Path, remove: bool) -> int:
    """Unpack every ``wav/*.tar.gz`` not yet marked done; returns how many were unpacked now."""
    done_now = 0
    archives = sorted(wav_dir.glob("*.tar.gz"))
    for i, archive in enumerate(archives, 1):
        marker = wav_dir / f".{archive.name}.done"
        if not marker.exists():
            _extract(archive, wav_dir)
            write_text_atomic(marker, f"{archive.name}\n")
            done_now += 1
            if done_now % 50 == 0:
                log.info("unpacked %d/%d speaker archives", i, len(archives))
        if remove:
            archive.unlink()
    if archives:
        log.info(
            "%s: %d speaker archives, %d unpacked now, %d already done",
            wav_dir,
            len(archives),
            done_now,
            len(archives) - done_now,
        )
    return done_now


def read_transcript(path: Path) -> dict[str, str]:
    """utt -> text without spaces; lines with an id but no words are errors naming file:line."""
    if not path.is_file():
        raise LayoutError(f"{path}: transcript file is missing")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as exc:
        raise LayoutError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    texts: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        parts = line.split(maxsplit=1)
        if not parts:
            continue
        if len(parts) < 2:
            raise LayoutError(f"{path}:{n}: utterance {parts[0]!r} has no transcript")
        if parts[0] in texts:
            raise LayoutError(f"{path}:{n}: utterance {parts[0]!r} listed twice")
        texts[parts[0]] = "".join(parts[1].split())
    if not texts:
        raise LayoutError(f"{path}: no transcript lines")
    return texts


def scan_set(wav_dir: Path, name: str) -> dict[str, tuple[str, str]]:
    """utt -> (wav path, speaker) for ``wav/<name>/<speaker>/<utt>.wav``."""
    set_dir = wav_dir / name
    if not set_dir.is_dir():
        raise LayoutError(
            f"{set_dir}: set folder missing (expected wav/{name}/<speaker>/<utt>.wav, "
            f"or speaker archives wav/<speaker>.tar.gz to unpack)"
        )
    found: dict[str, tuple[str, str]] = {}
    for wav in sorted(set_dir.glob("*/*.wav")):
        utt, spk_dir = wav.stem, wav.parent.name
        pos = utt.find(spk_dir)
        if pos < 0:
            raise LayoutError(f"{wav}: utterance id {utt!r} does not contain its speaker folder's name {spk_dir!r}")
        if utt in found:
            raise LayoutError(f"{wav}: utterance {utt!r} also at {found[utt][0]}")
        found[utt] = (str(wav.resolve()), utt[: pos + len(spk_dir)])
    if not found:
        raise LayoutError(f"{set_dir}: no <speaker>/<utt>.wav files")
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", required=True, help="folder holding data_aishell/ (or data_aishell.tgz)")
    p.add_argument("--data", default="data", help="where the data dirs go (default: data)")
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS, help="sets to prepare (default: all three)")
    p.add_argument("--remove-archives", action="store_true", help="delete wav/<speaker>.tar.gz once unpacked (as Kaldi does)")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs reading durations")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    data = Path(args.data)
    try:
        root = find_root(Path(args.corpus_dir))
        wav_dir = root / "wav"
        if not wav_dir.is_dir():
            raise LayoutError(f"{wav_dir}: missing (expected data_aishell/wav/ with <speaker>.tar.gz or <set>/ folders)")
        untar_speakers(wav_dir, args.remove_archives)
        texts = read_transcript(root / TRANSCRIPT)
        audio = {name: scan_set(wav_dir, name) for name in args.sets}
        all_paths = sorted(path for found in audio.values() for path, _ in found.values())
        durs = audio_durations(all_paths, args.nj)
        summary: dict = {"corpus": str(root.resolve()), "transcript_lines": len(texts), "data_dirs": {}}
        for name in args.sets:
            utts = {u: (path, spk, texts[u]) for u, (path, spk) in audio[name].items() if u in texts}
            try:
                stats = write_data_dir(data / name, utts, durs)
            except ValueError as exc:
                raise LayoutError(str(exc)) from None
            stats["audio_without_transcript"] = len(audio[name]) - len(utts)
            summary["data_dirs"][name] = stats
            log.info("%s: skipped %d audio files without a transcript line", name, stats["audio_without_transcript"])
        if set(args.sets) == set(SETS):
            with_audio = {u for found in audio.values() for u in found}
            summary["transcript_without_audio"] = sum(1 for u in texts if u not in with_audio)
            log.info("transcript lines without audio (skipped): %d", summary["transcript_without_audio"])
    except LayoutError as exc:
        print(f"data_prep.py: error: {exc}", file=sys.stderr)
        return 1
    write_text_atomic(data / "local" / "data_prep.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
