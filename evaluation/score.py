"""Score hypotheses against references: in memory, or a decode dir on disk.

A decode dir holds the hypotheses as a Kaldi-style text file ``hyp`` (``utt words...``; an empty
hypothesis may be written as the bare id) and, unless given elsewhere, the references as
``ref`` in the same format. Scoring writes three files next to them:

``result.txt``
    sclite-style report (summary box and per-utterance alignments), see :mod:`evaluation.sclite`.
``wer`` or ``cer``
    the one-line Kaldi summary, ``%WER 12.34 [ 56 / 454, 3 ins, 10 del, 43 sub ]``.
``scores.json``
    the counts, unit and normalizer, read back by :mod:`evaluation.summary`.

Command line::

    python -m evaluation.score --ref data/test/text --hyp exp/m/decode_test/text \\
        --out exp/m/decode_test [--unit char] [--normalizer chinese]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from asr.data.datadir import DataDirError, read_table
from asr.io_utils import write_text_atomic
from evaluation.metrics import CorpusScore, UtteranceScore, align_utterances, check_unit, metric_name
from evaluation.normalize import NORMALIZERS, Normalizer, get_normalizer
from evaluation.sclite import format_summary_line, write_result_txt

logger = logging.getLogger(__name__)

HYP_FILE = "hyp"
REF_FILE = "ref"
RESULT_FILE = "result.txt"
SCORES_FILE = "scores.json"


class ScoringError(ValueError):
    """References and hypotheses do not fit together (e.g. a hypothesis for an unknown utterance)."""


def score_texts(
    ref: dict[str, str], hyp: dict[str, str], unit: str = "word", normalizer: str | Normalizer = "english"
) -> tuple[list[UtteranceScore], CorpusScore]:
    """Score every reference utterance, in the order of ``ref``.

    A reference utterance without a hypothesis is scored against an empty one (all deletions),
    counted in ``CorpusScore.num_missing_hyp`` and logged as a warning. A hypothesis whose
    utterance has no reference raises :class:`ScoringError` naming it.
    """
    normalize = get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    unknown = [utt for utt in hyp if utt not in ref]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise ScoringError(f"hypothesis for utterance {unknown[0]!r} has no reference{more}")
    missing = [utt for utt in ref if utt not in hyp]
    if missing:
        logger.warning("%d of %d utterances have no hypothesis (first: %r); scored as empty", len(missing), len(ref), missing[0])
    utt_ids = list(ref)
    utts = align_utterances(utt_ids, [normalize(ref[u]) for u in utt_ids], [normalize(hyp.get(u, "")) for u in utt_ids], unit)
    return utts, CorpusScore.from_utterances(utts, num_missing_hyp=len(missing))


def read_text(path: str | Path) -> dict[str, str]:
    """Read a Kaldi ``text`` file (any order; empty transcripts allowed)."""
    return read_table(path, allow_empty_value=True, check_sorted=False)


def score_dir(
    decode_dir: str | Path,
    ref_path: str | Path | None = None,
    hyp_path: str | Path | None = None,
    unit: str = "word",
    normalizer: str = "english",
) -> CorpusScore:
    """Score a decode dir and write ``result.txt``, ``wer``/``cer`` and ``scores.json`` into it.

    ``ref_path`` defaults to ``decode_dir/ref`` and ``hyp_path`` to ``decode_dir/hyp``.
    """
    check_unit(unit)
    decode_dir = Path(decode_dir)
    ref_path = Path(ref_path) if ref_path is not None else decode_dir / REF_FILE
    hyp_path = Path(hyp_path) if hyp_path is not None else decode_dir / HYP_FILE
    utts, score = score_texts(read_text(ref_path), read_text(hyp_path), unit, normalizer)
    write_result_txt(decode_dir / RESULT_FILE, utts, score, unit, title=str(hyp_path))
    write_text_atomic(decode_dir / metric_name(unit).lower(), format_summary_line(score, unit) + "\n")
    record = {"unit": unit, "normalizer": normalizer, "ref": str(ref_path), "hyp": str(hyp_path)}
    record["counts"] = asdict(score)
    write_text_atomic(decode_dir / SCORES_FILE, json.dumps(record, indent=2) + "\n")
    return score


def read_scores(decode_dir: str | Path) -> tuple[str, CorpusScore]:
    """Read back what :func:`score_dir` wrote: ``(unit, CorpusScore)``."""
    record = json.loads((Path(decode_dir) / SCORES_FILE).read_text(encoding="utf-8"))
    return record["unit"], CorpusScore(**record["counts"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.score",
        description="Score Kaldi-style hypothesis text against reference text; write result.txt, "
        "wer (or cer) and scores.json into the output dir.",
    )
    parser.add_argument("--ref", help=f"reference text file (default: OUT/{REF_FILE})")
    parser.add_argument("--hyp", help=f"hypothesis text file (default: OUT/{HYP_FILE})")
    parser.add_argument("--out", required=True, help="decode dir to write the reports into")
    parser.add_argument("--unit", choices=("word", "char"), default="word", help="word -> WER, char -> CER")
    parser.add_argument("--normalizer", choices=tuple(NORMALIZERS), default="english", help="text normalizer (default: english)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        score = score_dir(args.out, args.ref, args.hyp, args.unit, args.normalizer)
    except (DataDirError, ScoringError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_summary_line(score, args.unit))
    return 0


if __name__ == "__main__":
    sys.exit(main())
