"""Error counting: align reference and hypothesis tokens with jiwer and tally C/S/D/I.

Two units are scored:

``word`` (WER)
    Tokens are the whitespace-separated words.
``char`` (CER)
    Tokens are the characters with all whitespace removed first, for every language: spaces are
    not scored, so CER = edit distance over the non-space characters / number of non-space
    reference characters. For Chinese this is the usual CER; for English it means a wrong word
    boundary alone ("a cat" vs "ac at") costs nothing.

The alignment is jiwer's minimum edit distance with unit costs, so the error total (and WER) is
the Levenshtein distance, as in Kaldi's ``compute-wer``. sclite instead minimizes a weighted cost
(substitution 4, insertion/deletion 3), which shows in two ways:

* on ties it prefers a deletion plus an insertion to two substitutions: ref "a b", hyp "b c" is
  S S here but D C I in sclite. Such ties are common, so on a test set sclite's Corr/Sub/Del/Ins
  often differ from ours by k * (+1, -2, +1, +1) while the error totals agree;
* rarely, it accepts more errors to avoid substitutions: ref "a b c d e f g", hyp
  "x x x x a b c" is 7 S here (7 errors) but 4 I, 3 C, 4 D in sclite (8 errors).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import NamedTuple

import jiwer

UNITS = ("word", "char")
_OP_KIND = {"equal": "C", "substitute": "S", "delete": "D", "insert": "I"}


def check_unit(unit: str) -> str:
    """Return ``unit`` if it is ``word`` or ``char``, else raise ``ValueError``."""
    if unit not in UNITS:
        raise ValueError(f"unknown unit {unit!r}; choose 'word' or 'char'")
    return unit


def metric_name(unit: str) -> str:
    """``WER`` for words, ``CER`` for characters."""
    return {"word": "WER", "char": "CER"}[check_unit(unit)]


class Op(NamedTuple):
    """One aligned position: kind is C, S, D or I; ``ref`` is None for I, ``hyp`` is None for D."""

    kind: str
    ref: str | None
    hyp: str | None


@dataclass(frozen=True)
class UtteranceScore:
    """The alignment of one utterance and its counts."""

    utt_id: str
    ref_tokens: list[str]
    hyp_tokens: list[str]
    ops: list[Op]
    corr: int
    sub: int
    dele: int
    ins: int

    @property
    def num_errors(self) -> int:
        return self.sub + self.dele + self.ins


def _percent(count: int, total: int) -> float:
    """100 * count / total; with total 0 it is 0.0 when count is 0 and infinity otherwise."""
    if total == 0:
        return 0.0 if count == 0 else math.inf
    return 100.0 * count / total


@dataclass(frozen=True)
class CorpusScore:
    """Totals over a test set. Rates are percentages of reference tokens (S.Err: of sentences)."""

    num_sents: int
    num_ref_tokens: int
    corr: int
    sub: int
    dele: int
    ins: int
    sent_errors: int
    num_missing_hyp: int = 0

    @classmethod
    def from_utterances(cls, utts: Sequence[UtteranceScore], num_missing_hyp: int = 0) -> CorpusScore:
        return cls(
            num_sents=len(utts),
            num_ref_tokens=sum(len(u.ref_tokens) for u in utts),
            corr=sum(u.corr for u in utts),
            sub=sum(u.sub for u in utts),
            dele=sum(u.dele for u in utts),
            ins=sum(u.ins for u in utts),
            sent_errors=sum(1 for u in utts if u.num_errors),
            num_missing_hyp=num_missing_hyp,
        )

    @property
    def num_errors(self) -> int:
        return self.sub + self.dele + self.ins

    @property
    def err_rate(self) -> float:
        return _percent(self.num_errors, self.num_ref_tokens)

    @property
    def corr_rate(self) -> float:
        return _percent(self.corr, self.num_ref_tokens)

    @property
    def sub_rate(self) -> float:
        return _percent(self.sub, self.num_ref_tokens)

    @property
    def del_rate(self) -> float:
        return _percent(self.dele, self.num_ref_tokens)

    @property
    def ins_rate(self) -> float:
        return _percent(self.ins, self.num_ref_tokens)

    @property
    def sent_err_rate(self) -> float:
        return _percent(self.sent_errors, self.num_sents)


def _utterance_score(utt_id: str, ref: list[str], hyp: list[str], chunks) -> UtteranceScore:
    ops = []
    for chunk in chunks:
        kind = _OP_KIND[chunk.type]
        ref_part = ref[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp_part = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        ops.extend(Op(kind, r, h) for r, h in zip_longest(ref_part, hyp_part))
    counts = Counter(op.kind for op in ops)
    return UtteranceScore(utt_id, ref, hyp, ops, counts["C"], counts["S"], counts["D"], counts["I"])


def align_utterances(
    utt_ids: Sequence[str], refs: Sequence[str], hyps: Sequence[str], unit: str = "word"
) -> list[UtteranceScore]:
    """Align already-normalized reference and hypothesis texts, one per utterance id.

    Either text may be empty: an empty hypothesis is all deletions, an empty reference all
    insertions.
    """
    if not len(utt_ids) == len(refs) == len(hyps):
        raise ValueError(f"{len(utt_ids)} ids, {len(refs)} references and {len(hyps)} hypotheses")
    check_unit(unit)
    if not utt_ids:
        return []
    if unit == "word":
        out = jiwer.process_words(list(refs), list(hyps))
    else:
        out = jiwer.process_characters(["".join(r.split()) for r in refs], ["".join(h.split()) for h in hyps])
    return [
        _utterance_score(utt_id, ref, hyp, chunks)
        for utt_id, ref, hyp, chunks in zip(utt_ids, out.references, out.hypotheses, out.alignments)
    ]
