"""A file's transcript (its chunks' hypotheses, stitched) and the output formats of ``asr transcribe``.

    txt   the text, one line
    json  {"text", "duration", "segments": [{start, end, text}], "words": [{text, start, end}],
           "tokens": [{token, start, end}]}   (times in seconds from the start of the file)
    srt   SubRip cues, ``00:00:01,234 --> 00:00:03,500``
    vtt   WebVTT cues, ``00:00:01.234 --> 00:00:03.500``
    tsv   start<TAB>end<TAB>text per cue, integer milliseconds (as whisper writes it)

A cue is one chunk, or, when the chunk's words have times, runs of its words of at most
``MAX_CUE_SECONDS`` and ``MAX_CUE_CHARS``. Every file is written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from asr.decoding.hypothesis import Hypothesis, Word
from asr.io_utils import write_text_atomic

FORMATS = ("txt", "json", "srt", "vtt", "tsv")
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


def _word_cues(words: list[Word], max_seconds: float, max_chars: int) -> list[Cue]:
    cues: list[Cue] = []
    for w in words:
        last = cues[-1] if cues else None
        if last is None or w.end - last.start > max_seconds or len(last.text) + 1 + len(w.text) > max_chars:
            cues.append(Cue(w.start, w.end, w.text))
        else:
            last.end, last.text = w.end, f"{last.text} {w.text}"
    return cues


def cues(transcript: Transcript, max_seconds: float = MAX_CUE_SECONDS, max_chars: int = MAX_CUE_CHARS) -> list[Cue]:
    """Subtitle cues in time order: word runs where the words have times, else whole chunks."""
    out: list[Cue] = []
    for seg in transcript.segments:
        hyp = seg.hypothesis
        if hyp.words:
            out += _word_cues(hyp.words, max_seconds, max_chars)
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


def to_json(transcript: Transcript) -> str:
    doc = {
        "text": transcript.text,
        "duration": round(transcript.duration, 3),
        "segments": [{"start": round(s.start, 3), "end": round(s.end, 3), "text": s.hypothesis.text.strip()}
                     for s in transcript.segments],
        "words": [{"text": w.text, "start": w.start, "end": w.end} for w in transcript.words],
        "tokens": [{"token": t, "start": b, "end": e} for s in transcript.segments
                   for t, b, e in zip(s.hypothesis.tokens, s.hypothesis.token_starts, s.hypothesis.token_times)],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def to_srt(transcript: Transcript) -> str:
    return "".join(f"{i}\n{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n{c.text}\n\n"
                   for i, c in enumerate(cues(transcript), 1))


def to_vtt(transcript: Transcript) -> str:
    return "WEBVTT\n\n" + "".join(f"{format_timestamp(c.start, '.')} --> {format_timestamp(c.end, '.')}\n{c.text}\n\n"
                                  for c in cues(transcript))


def to_tsv(transcript: Transcript) -> str:
    return "start\tend\ttext\n" + "".join(f"{round(c.start * 1000)}\t{round(c.end * 1000)}\t{c.text}\n"
                                          for c in cues(transcript))


RENDER = {"txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv}


def write_outputs(transcript: Transcript, out_dir: str | Path, name: str, fmt: str) -> list[Path]:
    """Write ``<out_dir>/<name>.<ext>`` for ``fmt`` (one of FORMATS, or "all"); returns the paths written."""
    paths = []
    for ext in FORMATS if fmt == "all" else (fmt,):
        path = Path(out_dir) / f"{name}.{ext}"
        write_text_atomic(path, RENDER[ext](transcript))
        paths.append(path)
    return paths
