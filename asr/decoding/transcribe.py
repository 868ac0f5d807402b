"""Transcribe audio files: inputs -> chunks -> batched recognizer -> one stitched transcript per file.

    collect_inputs        files, directories (recursively) and Kaldi wav.scp files -> named sources
    transcribe_inputs     read each source at the recognizer's rate, drop long pauses, cut it at quiet points
                          (asr.decoding.segmenter), run the chunks of several files together in
                          batches sorted by length, and yield each file's Transcript (or its AudioError)
    transcribe_wave       the same for one waveform in memory

Any :class:`~asr.decoding.hypothesis.Recognizer` works here; ``asr.decoding.recognizers.load_recognizer``
builds the one a model dir describes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from asr.data.audio import AUDIO_EXTENSIONS, AudioError, read_audio
from asr.data.datadir import read_table
from asr.decoding.hypothesis import Hypothesis, Recognizer
from asr.decoding.segmenter import speech_chunks
from asr.decoding.writers import Segment, Transcript

POOL_BATCHES = 8  # chunks of this many batches (at least) are pooled, sorted by length and decoded together


# ---- inputs -------------------------------------------------------------------------------------
@dataclass
class AudioInput:
    name: str  # output name: file stem, path below an input dir without the extension, or wav.scp key
    source: str  # a path or a ``cmd |`` pipe (read_audio)


def _is_wav_scp(arg: str) -> bool:
    return arg.endswith("wav.scp") and Path(arg).is_file()


def collect_inputs(args: list[str], wav_scp: str | None = None) -> list[AudioInput]:
    """Expand command-line inputs. Raises ValueError for an empty directory or clashing output names."""
    inputs: list[AudioInput] = []
    for arg in args + ([wav_scp] if wav_scp else []):
        path = Path(arg)
        if arg == wav_scp or _is_wav_scp(arg):
            inputs += [AudioInput(utt, src) for utt, src in read_table(path, check_sorted=False).items()]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                raise ValueError(f"{arg}: no audio files ({' '.join(AUDIO_EXTENSIONS)}) below this directory")
            inputs += [AudioInput(p.relative_to(path).with_suffix("").as_posix(), str(p)) for p in found]
        else:
            inputs.append(AudioInput(path.stem, arg))
    seen: dict[str, str] = {}
    for item in inputs:
        if seen.setdefault(item.name, item.source) != item.source:
            raise ValueError(f"{seen[item.name]} and {item.source} would both be written as {item.name}.*")
    return inputs


# ---- files -> chunks -> batches -> transcripts --------------------------------------------------
@dataclass
class _Pending:
    item: AudioInput
    wave: torch.Tensor  # (N,) at the recognizer's rate
    spans: list[tuple[int, int]]  # chunk boundaries in samples (speech_chunks: long pauses left out)


def _decode_pool(
    recognizer: Recognizer, pool: list[_Pending], batch_size: int, progress
) -> Iterator[tuple[AudioInput, Transcript]]:
    """Recognize all chunks of ``pool`` in batches of similar length, then stitch each file back together."""
    lengths = {(i, j): e - s for i, p in enumerate(pool) for j, (s, e) in enumerate(p.spans)}
    chunks = sorted(lengths, key=lengths.get, reverse=True)  # (file, chunk) keys, longest first
    hyps: dict[tuple[int, int], Hypothesis] = {}
    for k in range(0, len(chunks), batch_size):
        batch = chunks[k : k + batch_size]
        waves = [pool[i].wave[slice(*pool[i].spans[j])] for i, j in batch]  # (N_c,) each
        hyps.update(zip(batch, recognizer(waves)))
        if progress is not None:
            progress.update(len(batch))
    rate = recognizer.sample_rate
    for i, p in enumerate(pool):
        segments = [
            Segment(round(s / rate, 3), round(e / rate, 3), hyps[i, j].shifted(s / rate)) for j, (s, e) in enumerate(p.spans)
        ]
        yield p.item, Transcript(p.wave.shape[0] / rate, segments)


def transcribe_wave(
    recognizer: Recognizer,
    wave: torch.Tensor,
    batch_size: int = 8,
    chunk_seconds: float = 20.0,
    vad: str = "energy",
    min_pause: float = 1.0,
) -> Transcript:
    """One waveform (N,) at the recognizer's rate -> its Transcript (chunked as files are)."""
    item = AudioInput("audio", "<waveform>")
    pending = _Pending(item, wave, speech_chunks(wave, recognizer.sample_rate, chunk_seconds, min_pause=min_pause, vad=vad))
    return next(_decode_pool(recognizer, [pending], batch_size, None))[1]


def transcribe_inputs(
    recognizer: Recognizer,
    inputs: list[AudioInput],
    batch_size: int = 8,
    chunk_seconds: float = 20.0,
    progress=None,
    vad: str = "energy",
    min_pause: float = 1.0,
) -> Iterator[tuple[AudioInput, Transcript | AudioError]]:
    """Yield ``(input, Transcript)`` for each input, or ``(input, AudioError)`` when it cannot be read.

    Files are read one after the other and cut into chunks of at most ``chunk_seconds``; once
    ``POOL_BATCHES * batch_size`` chunks are pooled (and at the end) they are decoded together, so
    memory holds about that many chunks' audio plus the file being read. ``progress`` (a tqdm bar,
    optional) counts chunks; its total grows as files are read. ``vad`` (energy | silero | none) and
    ``min_pause``: which pauses are left out (:func:`asr.decoding.segmenter.speech_chunks`).
    """
    pool: list[_Pending] = []
    for item in inputs:
        try:
            wave, rate = read_audio(item.source, recognizer.sample_rate)
        except AudioError as exc:
            yield item, exc
            continue
        pool.append(_Pending(item, wave, speech_chunks(wave, rate, chunk_seconds, min_pause=min_pause, vad=vad)))
        if progress is not None:
            progress.total += len(pool[-1].spans)
            progress.refresh()
        if sum(len(p.spans) for p in pool) >= POOL_BATCHES * batch_size:
            yield from _decode_pool(recognizer, pool, batch_size, progress)
            pool = []
    yield from _decode_pool(recognizer, pool, batch_size, progress)
