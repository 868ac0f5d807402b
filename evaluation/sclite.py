"""Reports in the formats people already read: sclite's ``result.txt`` and Kaldi's ``wer`` line.

``result.txt`` holds the summary box of sclite's ``sum`` report (only the Sum/Avg row:
percentages with one decimal), the Kaldi-style totals, and one alignment per utterance in
sclite's ``pralign`` layout::

    id: (utt1)
    Scores: (#C #S #D #I) 4 2 0 1
    REF:  the cat SAT on THE mat ***
    HYP:  the cat SIT on MAT mat TOO
    Eval:         S      S       I

Errors are in upper case, a deleted or inserted token faces a run of ``*`` as wide as itself,
and columns are padded to the display width (CJK characters count two).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from pathlib import Path

from asr.io_utils import write_text_atomic
from evaluation.metrics import CorpusScore, UtteranceScore, check_unit, metric_name


def format_summary_line(score: CorpusScore, unit: str) -> str:
    """Kaldi ``compute-wer`` style: ``%WER 12.34 [ 56 / 454, 3 ins, 10 del, 43 sub ]``."""
    return (
        f"%{metric_name(unit)} {score.err_rate:.2f} [ {score.num_errors} / {score.num_ref_tokens}, "
        f"{score.ins} ins, {score.dele} del, {score.sub} sub ]"
    )


def _summary_box(score: CorpusScore, unit: str, title: str) -> list[str]:
    """sclite's summary box with the single Sum/Avg row, ``title`` (if any) in its head."""
    rates = (
        ("Corr", score.corr_rate),
        ("Sub", score.sub_rate),
        ("Del", score.del_rate),
        ("Ins", score.ins_rate),
        ("Err", score.err_rate),
        ("S.Err", score.sent_err_rate),
    )
    tokens = "# Chr" if check_unit(unit) == "char" else "# Wrd"
    groups = [  # (header, value) pairs; the first group is left-aligned, numbers right-aligned
        [("SPKR", "Sum/Avg")],
        [("# Snt", str(score.num_sents)), (tokens, str(score.num_ref_tokens))],
        [(name, f"{rate:.1f}") for name, rate in rates],
    ]
    header_cells, value_cells = [], []
    for i, group in enumerate(groups):
        justify = str.ljust if i == 0 else str.rjust
        widths = [max(len(h), len(v), 5) for h, v in group]
        header_cells.append("  ".join(justify(h, w) for (h, _), w in zip(group, widths)))
        value_cells.append("  ".join(justify(v, w) for (_, v), w in zip(group, widths)))
    header = "| " + " | ".join(header_cells) + " |"
    inner = len(header) - 2
    lines = ["," + "-" * inner + "."]
    if title:
        if len(title) > inner - 2:  # keep the informative end of a long path
            title = "..." + title[-(inner - 5) :]
        lines += ["|" + title.center(inner) + "|", "|" + "-" * inner + "|"]
    lines += [
        header,
        "|" + "+".join("-" * (len(cell) + 2) for cell in header_cells) + "|",
        "| " + " | ".join(value_cells) + " |",
        "`" + "-" * inner + "'",
    ]
    return lines


def _display_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _display_width(text))


def format_alignment(utt: UtteranceScore) -> list[str]:
    """The ``id:``, ``Scores:``, ``REF:``, ``HYP:`` and ``Eval:`` lines of one utterance."""
    ref_cells, hyp_cells, eval_cells = [], [], []
    for kind, ref, hyp in utt.ops:
        if kind != "C":
            ref = None if ref is None else ref.upper()
            hyp = None if hyp is None else hyp.upper()
        width = max(_display_width(token) for token in (ref, hyp) if token is not None)
        ref_cells.append(_pad("*" * width if ref is None else ref, width))
        hyp_cells.append(_pad("*" * width if hyp is None else hyp, width))
        eval_cells.append(_pad("" if kind == "C" else kind, width))
    return [
        f"id: ({utt.utt_id})",
        f"Scores: (#C #S #D #I) {utt.corr} {utt.sub} {utt.dele} {utt.ins}",
        ("REF:  " + " ".join(ref_cells)).rstrip(),
        ("HYP:  " + " ".join(hyp_cells)).rstrip(),
        ("Eval: " + " ".join(eval_cells)).rstrip(),
    ]


def format_result_txt(utt_scores: Sequence[UtteranceScore], corpus_score: CorpusScore, unit: str, title: str = "") -> str:
    """The whole ``result.txt``; ``title`` (e.g. the hypothesis file) heads the summary box."""
    box = _summary_box(corpus_score, unit, title)
    lines = [
        "SYSTEM SUMMARY PERCENTAGES".center(len(box[0])).rstrip(),
        "",
        *box,
        "",
        format_summary_line(corpus_score, unit),
        f"%SER {corpus_score.sent_err_rate:.2f} [ {corpus_score.sent_errors} / {corpus_score.num_sents} ]",
        f"Scored {corpus_score.num_sents} sentences, {corpus_score.num_missing_hyp} not present in hyp.",
        "",
        "",
        "DUMP OF SYSTEM ALIGNMENT STRUCTURE",
        "",
    ]
    for utt in utt_scores:
        lines += format_alignment(utt) + [""]
    return "\n".join(lines)


def write_result_txt(
    path: str | Path,
    utt_scores: Sequence[UtteranceScore],
    corpus_score: CorpusScore,
    unit: str,
    title: str = "",
) -> None:
    """Write :func:`format_result_txt` to ``path`` atomically (temp file, then rename)."""
    write_text_atomic(path, format_result_txt(utt_scores, corpus_score, unit, title))
