#!/usr/bin/env python3
"""Stage 0 of recipes/librispeech: Kaldi data dirs from the official LibriSpeech layout.

    python local/data_prep.py --corpus-dir /data --data data [--train-subsets auto] [--test-subsets auto] [--nj 4]

``--corpus-dir`` is the folder the openslr.org/12 archives were unpacked in (it holds
``LibriSpeech/``; the ``LibriSpeech`` folder itself is accepted too)::

    LibriSpeech/SPEAKERS.TXT
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<subset>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt   (lines "<utt-id> UPPER CASE TEXT")

Subsets: train-clean-100, train-clean-360, train-other-500, dev-clean, dev-other, test-clean,
test-other. ``auto`` (the default) takes every train-* subset present for training and every
dev-*/test-* subset present for evaluation; a subset named explicitly must exist.

Writes ``<data>/train`` (the union of the training subsets) and ``<data>/<subset>`` with ``-``
replaced by ``_`` (``data/dev_clean``, ...), each with ``wav.scp`` (absolute paths of the flac
files, which the toolkit's audio reader decodes with libsndfile), ``text``, ``utt2spk`` and
``spk2utt`` (speaker = ``<reader>-<chapter>``, as in Kaldi's recipe), ``spk2gender`` (from
SPEAKERS.TXT) and ``utt2dur``; and ``<data>/local/data_prep.json`` (counts, skipped files).

Transcript lines without a flac file and flac files without a transcript line are skipped and
counted. Each data dir is built under a temp name, validated, then renamed into place.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from pathlib import Path

try:
    import asr  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))


from asr.data.prep import audio_durations, write_data_dir  # noqa: E402
from asr.io_utils import write_text_atomic  # noqa: E402

log = logging.getLogger("librispeech_data_prep")

TRAIN_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500")
TEST_SUBSETS = ("dev-clean", "dev-other", "test-clean", "test-other")
UTT_RE = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class LayoutError(RuntimeError):
    """The corpus dir does not have LibriSpeech's layout; the message names the path."""


def find_root(corpus_dir: Path) -> Path:
    """``<corpus_dir>/LibriSpeech``, or ``corpus_dir`` itself when it already is that folder."""
    if not corpus_dir.is_dir():
        raise LayoutError(f"--corpus-dir {corpus_dir}: not a directory")
    for root in (corpus_dir / "LibriSpeech", corpus_dir):
        if any((root / s).is_dir() for s in TRAIN_SUBSETS + TEST_SUBSETS):
            return root
    raise LayoutError(
        f"--corpus-dir {corpus_dir}: no LibriSpeech subset found; expected {corpus_dir}/LibriSpeech/<subset>/ "
        f"with <subset> one of {', '.join(TRAIN_SUBSETS + TEST_SUBSETS)} (unpack the openslr.org/12 archives there)"
    )


def resolve_subsets(root: Path, requested: list[str], kind: tuple[str, ...]) -> list[str]:
    """``auto`` -> every subset of ``kind`` present; named subsets must exist."""
    if requested == ["auto"]:
        return [s for s in kind if (root / s).is_dir()]
    missing = [s for s in requested if not (root / s).is_dir()]
    if missing:
        present = [s for s in TRAIN_SUBSETS + TEST_SUBSETS if (root / s).is_dir()]
        raise LayoutError(f"{root / missing[0]}: subset {missing[0]!r} not found (present: {', '.join(present) or 'none'})")
    return requested


def read_speakers(root: Path) -> dict[str, str]:
    """Reader id -> gender ('m'/'f') from SPEAKERS.TXT (``ID | SEX | SUBSET | MINUTES | NAME``, ';' comments)."""
    path = root / "SPEAKERS.TXT"
    if not path.is_file():
        log.warning("%s is missing: no spk2gender", path)
        return {}
    genders = {}
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith(";"):
            continue
        fields = [f.strip() for f in line.split("|")]
        if len(fields) < 2 or not fields[0].isdigit() or fields[1].upper() not in ("M", "F"):
            raise LayoutError(f"{path}:{n}: expected 'ID | SEX | SUBSET | MINUTES | NAME', got {line.strip()!r}")
        genders[fields[0]] = fields[1].lower()
    return genders


def scan_subset(root: Path, subset: str, case: str) -> tuple[dict[str, tuple[str, str, str]], dict]:
    """utt -> (flac path, speaker, text) for one subset, and its counts of skipped files."""
    utts: dict[str, tuple[str, str, str]] = {}
    counts = {"transcript_without_audio": 0, "audio_without_transcript": 0, "empty_transcript": 0}
    chapters = sorted(p for p in (root / subset).glob("*/*") if p.is_dir())
    if not chapters:
        raise LayoutError(f"{root / subset}: no <speaker>/<chapter>/ folders")
    for chapter_dir in chapters:
        reader, chapter = chapter_dir.parent.name, chapter_dir.name
        trans = chapter_dir / f"{reader}-{chapter}.trans.txt"
        flacs = {p.stem: p for p in chapter_dir.glob("*.flac")}
        seen = set()
        if not trans.is_file():
            log.warning("%s is missing: %d flac files without transcript skipped", trans, len(flacs))
            counts["audio_without_transcript"] += len(flacs)
            continue
        try:
            lines = trans.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise LayoutError(f"{trans}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.split(maxsplit=1)
            utt = parts[0]
            m = UTT_RE.match(utt)
            if not m or (m.group(1), m.group(2)) != (reader, chapter):
                raise LayoutError(f"{trans}:{n}: utterance id {utt!r} is not {reader}-{chapter}-<number>")
            if utt in utts:
                raise LayoutError(f"{trans}:{n}: utterance {utt!r} listed twice")
            seen.add(utt)
            text = " ".join(parts[1].split()) if len(parts) > 1 else ""
            if not text:
                counts["empty_transcript"] += 1
                continue
            if utt not in flacs:
                counts["transcript_without_audio"] += 1
                continue
            utts[utt] = (str(flacs[utt].resolve()), f"{reader}-{chapter}", text.lower() if case == "lower" else text.upper())
        counts["audio_without_transcript"] += len(set(flacs) - seen)
    return utts, counts


def _write(out: Path, utts: dict, durs: dict, spk2gender: dict | None) -> dict:
    try:
        return write_data_dir(out, utts, durs, spk2gender)
    except ValueError as exc:
        raise LayoutError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus-dir", required=True, help="folder holding LibriSpeech/ (or the LibriSpeech folder)")
    p.add_argument("--data", default="data", help="where the data dirs go (default: data)")
    p.add_argument(
        "--train-subsets",
        nargs="+",
        default=["auto"],
        help="subsets joined into <data>/train; 'auto' = every train-* present (default)",
    )
    p.add_argument(
        "--test-subsets",
        nargs="+",
        default=["auto"],
        help="subsets written as <data>/<subset with _>; 'auto' = every dev-*/test-* present (default)",
    )
    p.add_argument("--train-name", default="train", help="name of the joined training data dir (default: train)")
    p.add_argument(
        "--case",
        choices=("lower", "upper"),
        default="lower",
        help="transcript case (the corpus is upper case; scoring ignores case; LLMs read lower case better)",
    )
    p.add_argument("--nj", type=int, default=1, help="parallel jobs reading durations")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    try:
        root = find_root(Path(args.corpus_dir))
        train_subsets = resolve_subsets(root, args.train_subsets, TRAIN_SUBSETS)
        test_subsets = resolve_subsets(root, args.test_subsets, TEST_SUBSETS)
        if not train_subsets:
            raise LayoutError(f"{root}: no training subset ({', '.join(TRAIN_SUBSETS)}) found")
        genders = read_speakers(root)
        data = Path(args.data)
        summary: dict = {
            "corpus": str(root.resolve()),
            "train_subsets": train_subsets,
            "test_subsets": test_subsets,
            "case": args.case,
            "subsets": {},
            "data_dirs": {},
        }
        scanned = {}
        for subset in dict.fromkeys(train_subsets + test_subsets):
            utts, counts = scan_subset(root, subset, args.case)
            scanned[subset] = utts
            summary["subsets"][subset] = {"utterances_found": len(utts), **counts}
            log.info(
                "%s: %d utterances with audio and transcript; skipped: %s",
                subset,
                len(utts),
                ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()),
            )
        all_paths = sorted({path for utts in scanned.values() for path, _, _ in utts.values()})
        durs = audio_durations(all_paths, args.nj)
        spk2gender = (
            {spk: genders.get(spk.split("-")[0], "") for utts in scanned.values() for _, spk, _ in utts.values()}
            if genders
            else None
        )
        train: dict[str, tuple[str, str, str]] = {}
        for subset in train_subsets:
            clash = set(train) & set(scanned[subset])
            if clash:
                raise LayoutError(f"{root / subset}: utterance {sorted(clash)[0]!r} also in another training subset")
            train.update(scanned[subset])
        summary["data_dirs"][args.train_name] = _write(data / args.train_name, train, durs, spk2gender)
        for subset in test_subsets:
            name = subset.replace("-", "_")
            summary["data_dirs"][name] = _write(data / name, scanned[subset], durs, spk2gender)
    except LayoutError as exc:
        print(f"data_prep.py: error: {exc}", file=sys.stderr)
        return 1
    write_text_atomic(data / "local" / "data_prep.json", json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
