"""Scoring for speech recognition: WER/CER through jiwer, sclite-style reports, result tables.

``normalize``  text normalizers (english, chinese, none)
``metrics``    alignment and C/S/D/I counts per utterance and per corpus
``sclite``     ``result.txt`` (sclite layout) and the Kaldi ``%WER ...`` line
``score``      score texts or a decode dir (``python -m evaluation.score``)
``summary``    a table across decode dirs (``python -m evaluation.summary``)

The names below are imported on first use, so that ``python -m evaluation.score`` does not
import its own module twice.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

_EXPORTS = {
    "normalize": ["ChineseNormalizer", "EnglishNormalizer", "NoNormalizer", "Normalizer", "get_normalizer"],
    "metrics": ["CorpusScore", "Op", "UtteranceScore", "align_utterances", "metric_name"],
    "sclite": ["format_alignment", "format_result_txt", "format_summary_line", "write_result_txt"],
    "score": ["ScoringError", "read_scores", "read_text", "score_dir", "score_texts"],
    "summary": ["SummaryRow", "format_table", "summarize"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)

if TYPE_CHECKING:
    from evaluation.metrics import CorpusScore, Op, UtteranceScore, align_utterances, metric_name
    from evaluation.normalize import ChineseNormalizer, EnglishNormalizer, NoNormalizer, Normalizer, get_normalizer
    from evaluation.sclite import format_alignment, format_result_txt, format_summary_line, write_result_txt
    from evaluation.score import ScoringError, read_scores, read_text, score_dir, score_texts
    from evaluation.summary import SummaryRow, format_table, summarize


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"evaluation.{_MODULE_OF[name]}"), name)
