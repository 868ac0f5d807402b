"""A file's transcript (its chunks' hypotheses, stitched) and the output formats of ``asr transcribe``.

    txt   the text, one line
    json  whisper's shape: {"text", "language", "duration", "segments": [{"id", "start", "end", "text",
          "words": [{"word", "start", "end", "probability"}]}]}, and "tokens": [{token, start, end}]
          (times in seconds from the start of the file; a word starts with a space, as whisper's do)
    srt   SubRip cues, ``00:00:01,234 --> 00:00:03,500``
    vtt   WebVTT cues, ``00:00:01.234 --> 00:00:03.500``
    tsv   start<TAB>end<TAB>text per cue, integer milliseconds (as whisper writes it)
    kaldi one Kaldi ``text`` file for all inputs (``<name> <text>`` lines), written by the caller

A cue is one chunk, or, when the chunk's words have times, runs of its words of at most
``MAX_CUE_SECONDS`` and ``max_line_width`` characters (``max_words_per_line`` words, when given).
Every file is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr.decoding.hypothesis import Hypothesis, Word
from asr.io_utils import write_text_atomic

FORMATS = ("txt", "json", "srt", "vtt", "tsv")  # one file per input; "kaldi" is one file for all
MAX_CUE_SECONDS = 7.0
MAX_CUE_CHARS = 42


@dataclass
class Segment:
    start: float  # seconds from the start of the file
    end: float
    hypothesis: Hypothesis  # times already shifted to the file (Hypothesis.shifted(start))


@dataclass
class Transcript:
    duration: float  # seconds
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        return " ".join(t for t in (s.hypothesis.text.strip() for s in self.segments) if t)

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.hypothesis.words]


@dataclass
class Cue:
    start: float
    end: float
    text: str


def _word_cues(words: list[Word], max_seconds: float, max_chars: int, max_words: int | None = None) -> list[Cue]:
    cues: list[Cue] = []
    count = 0
    for w in words:
        last = cues[-1] if cues else None
        if (
            last is None
            or w.end - last.start > max_seconds
            or len(last.text) + 1 + len(w.text) > max_chars
            or (max_words is not None and count >= max_words)
        ):
            cues.append(Cue(w.start, w.end, w.text))
            count = 1
        else:
            last.end, last.text = w.end, f"{last.text} {w.text}"
            count += 1
    return cues


def cues(
    transcript: Transcript, max_seconds: float = MAX_CUE_SECONDS, max_chars: int = MAX_CUE_CHARS, max_words: int | None = None
) -> list[Cue]:
    """Subtitle cues in time order: word runs where the words have times, else whole chunks."""
    out: list[Cue] = []
    for seg in transcript.segments:
        hyp = seg.hypothesis
        if hyp.words:
            out += _word_cues(hyp.words, max_seconds, max_chars, max_words)
        elif hyp.text.strip():
            out.append(Cue(seg.start, seg.end, hyp.text.strip()))
    return out


def format_timestamp(seconds: float, decimal: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT; ``decimal="."`` for WebVTT), rounded to the millisecond."""
    ms = max(0, int(round(seconds * 1000)))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_txt(transcript: Transcript) -> str:
    return transcript.text + "\n"


def to_dict(transcript: Transcript, language: str = "en") -> dict:
    """The transcript in whisper's result shape (``whisper.transcribe`` / its JSON output), plus
    the duration and the units' times ("tokens")."""
    return {
        "text": transcript.text,
        "language": language,
        "duration": round(transcript.duration, 3),
        "segments": [
            {
                "id": i,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.hypothesis.text.strip(),
                "words": [
                    {"word": " " + w.text, "start": w.start, "end": w.end, "probability": w.probability}
                    for w in s.hypothesis.words
                ],
            }
            for i, s in enumerate(transcript.segments)
        ],
        "tokens": [
            {"token": t, "start": b, "end": e}
            for s in transcript.segments
            for t, b, e in zip(s.hypothesis.tokens, s.hypothesis.token_starts, s.hypothesis.token_times)
        ],
    }


def to_json(transcript: Transcript, **_) -> str:
    return json.dumps(to_dict(transcript), indent=2, ensure_ascii=False) + "\n"


def to_srt(transcript: Transcript, **cue_options) -> str:
    return "".join(
        f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{c.text}\n\n"
        for i, c in enumerate(cues(transcript, **cue_options), 1)
    )


def to_vtt(transcript: Transcript, **cue_options) -> str:
    return "WEBVTT\n\n" + "".join(
        f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n{c.text}\n\n"
        for c in cues(transcript, **cue_options)
    )


def to_tsv(transcript: Transcript, **cue_options) -> str:
    return "start\tend\ttext\n" + "".join(
        f"{round(c.start * 1000)}\t{round(c.end * 1000)}\t{c.text}\n" for c in cues(transcript, **cue_options)
    )


RENDER = {"txt": lambda t, **_: to_txt(t), "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}


def write_outputs(
    transcript: Transcript,
    out_dir: str | Path,
    name: str,
    fmt: str,
    max_line_width: int | None = None,
    max_words_per_line: int | None = None,
) -> list[Path]:
    """Write ``<out_dir>/<name>.<ext>`` for ``fmt`` (one of FORMATS, or "all"); returns the paths written.
    ``max_line_width`` / ``max_words_per_line``: the longest subtitle line (srt, vtt, tsv)."""
    options = {"max_chars": max_line_width or MAX_CUE_CHARS, "max_words": max_words_per_line}
    paths = []
    for ext in FORMATS if fmt == "all" else (fmt,):
        path = Path(out_dir) / f"{name}.{ext}"
        write_text_atomic(path, RENDER[ext](transcript, **options))
        paths.append(path)
    return paths


def format_segment(start: float, end: float, text: str) -> str:
    """A segment as whisper prints it: ``[00:01.240 --> 00:04.800] text`` (hours only when needed)."""

    def stamp(t: float) -> str:
        full = format_timestamp(t, ".")
        return full[3:] if full.startswith("00:") else full

    return f"[{stamp(start)} --> {stamp(end)}] {text}"
