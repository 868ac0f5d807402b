"""What a recognizer returns for one piece of audio, and the interface ``asr transcribe`` drives.

Times are seconds from the start of the audio the recognizer was given; a caller that cut a long
file into chunks shifts them by the chunk's offset (:meth:`Hypothesis.shifted`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import torch


@dataclass
class Word:
    text: str
    start: float  # seconds
    end: float  # seconds
    probability: float | None = None  # mean probability of its tokens, when the recognizer has one


@dataclass
class Hypothesis:
    text: str
    words: list[Word] = field(default_factory=list)  # with times, in order; may be empty
    tokens: list[str] = field(default_factory=list)  # output units as the model emitted them
    token_times: list[float] = field(default_factory=list)  # one per token: CIF fire time (its end), seconds
    token_starts: list[float] = field(default_factory=list)  # one per token: where its evidence begins
    token_probs: list[float] = field(default_factory=list)  # one per token when known: its probability

    def shifted(self, offset: float) -> Hypothesis:
        return replace(
            self,
            words=[replace(w, start=round(w.start + offset, 3), end=round(w.end + offset, 3)) for w in self.words],
            token_times=[round(t + offset, 3) for t in self.token_times],
            token_starts=[round(t + offset, 3) for t in self.token_starts],
        )


class Recognizer(Protocol):
    """Anything ``asr transcribe`` can drive: 16 kHz mono float waves in, one hypothesis per wave out."""

    sample_rate: int

    def __call__(self, waves: list[torch.Tensor]) -> list[Hypothesis]: ...


def words_from_pieces(
    pieces: list[str], starts: list[float], ends: list[float], marker: str = "▁", probs: list[float] | None = None
) -> list[Word]:
    """Group unit pieces into timed words. A piece starting with ``marker`` opens a word.

    A word spans from its first piece's start to its last piece's end (CIF: the first frame after
    the previous fire that carries weight, and the fire frame); its probability is the mean of its
    pieces' (as whisper's word timestamps have it) when ``probs`` are given.
    """
    words: list[Word] = []
    text, begin, last, word_probs = "", 0.0, 0.0, []

    def close() -> None:
        prob = round(sum(word_probs) / len(word_probs), 4) if probs is not None and word_probs else None
        words.append(Word(text.strip(), round(begin, 3), round(last, 3), prob))

    for k, (piece, s, e) in enumerate(zip(pieces, starts, ends)):
        if piece.startswith(marker) and text.strip():
            close()
            text, word_probs = "", []
        if not text.strip():
            begin = s
        text += piece.replace(marker, " ")
        last = e
        if probs is not None:
            word_probs.append(probs[k])
    if text.strip():
        close()
    return words


def align_words(words: list[str], timed: list[Word]) -> list[Word]:
    """Give ``words`` (an LLM transcript) the times of ``timed`` (the CIF words of the same audio).

    Words are matched by an edit-distance alignment (case-insensitive); a run of words replacing a
    run of timed words shares that run's span evenly; an inserted word gets the point between its
    neighbours. Times stay monotonic.
    """
    from difflib import SequenceMatcher

    out: list[Word] = []
    ops = SequenceMatcher(None, [w.lower() for w in words], [w.text.lower() for w in timed], autojunk=False).get_opcodes()
    for tag, i1, i2, j1, j2 in ops:
        if tag == "equal":
            out += [
                Word(words[i], timed[j].start, timed[j].end, timed[j].probability) for i, j in zip(range(i1, i2), range(j1, j2))
            ]
        elif tag in ("replace", "insert") and i2 > i1:
            if j2 > j1:
                begin, end = timed[j1].start, timed[j2 - 1].end
            else:
                begin = out[-1].end if out else (timed[j1].start if j1 < len(timed) else 0.0)
                end = timed[j1].start if j1 < len(timed) else begin
                end = max(begin, end)
            step = (end - begin) / (i2 - i1)
            out += [
                Word(words[i], round(begin + k * step, 3), round(begin + (k + 1) * step, 3)) for k, i in enumerate(range(i1, i2))
            ]
    return out
