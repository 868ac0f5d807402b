"""Cut long audio into chunks at quiet points, so a recognizer never sees more than ``max_seconds``.

The wave is framed into 25 ms frames (no overlap) and each frame's energy is taken in dB. While
more than ``max_seconds`` remain, the next cut is searched between ``max(min_seconds, max_seconds / 2)``
and ``max_seconds`` after the current chunk start (and at least ``min_seconds`` before the end of
the audio, so no chunk is shorter than ``min_seconds`` unless the whole file is): among the frames
within ``tolerance_db`` of the quietest one there, the longest run wins and the cut goes to its
middle, i.e. into the middle of the longest pause near the length limit. Chunks are contiguous:
together they cover every sample exactly once.

:func:`speech_chunks` first drops long stretches of near-silence (digital silence, a muted
microphone: frames far below both -55 dBFS and the file's loud frames), then cuts each remaining
region as above. A recognizer never sees a long silent stretch, where CIF weights are least
reliable, so no token is placed inside it and the words after it are timed after it.
"""

from __future__ import annotations

import math

import numpy as np
import torch

DIGITAL_SILENCE_DBFS = -90.0


def frame_energies_db(wave: torch.Tensor, frame: int) -> np.ndarray:
    """wave (N,) -> mean-square energy in dB of consecutive ``frame``-sample frames (ceil(N / frame),).

    The last, partial frame is averaged over the samples it has.
    """
    x = wave.detach().to(torch.float64).cpu().numpy()
    count = math.ceil(len(x) / frame)
    power = np.zeros(count * frame)
    power[: len(x)] = x * x
    sizes = np.full(count, frame)
    if count:
        sizes[-1] = len(x) - (count - 1) * frame
    return 10.0 * np.log10(power.reshape(count, frame).sum(1) / sizes + 1e-10)


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and (exclusive) ends of the runs of True in ``mask`` (F,)."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _quietest_run_middle(energy_db: np.ndarray, tolerance_db: float) -> int:
    """Index (into ``energy_db``) of the middle of the longest run of frames within ``tolerance_db`` of the minimum."""
    starts, ends = _runs(energy_db <= energy_db.min() + tolerance_db)
    longest = int(np.argmax(ends - starts))
    return int((starts[longest] + ends[longest]) // 2)


def split_on_silence(
    wave: torch.Tensor,
    sample_rate: int,
    max_seconds: float = 20.0,
    min_seconds: float = 1.0,
    frame_ms: float = 25.0,
    tolerance_db: float = 3.0,
) -> list[tuple[int, int]]:
    """Chunk boundaries of ``wave`` (N,): ``[(start, end), ...]`` in samples, ``end`` exclusive.

    The first chunk starts at 0, each next one where the previous ended, the last ends at N; every
    chunk is at most ``max_seconds`` long. A wave no longer than ``max_seconds`` is one chunk.
    """
    if not 0 < min_seconds <= max_seconds:
        raise ValueError(f"need 0 < min_seconds <= max_seconds, got {min_seconds} and {max_seconds}")
    n = wave.shape[0]
    frame = max(1, int(round(frame_ms * sample_rate / 1000)))
    longest, shortest = max(1, int(max_seconds * sample_rate)), int(min_seconds * sample_rate)
    search_from = max(shortest, longest // 2, 1)  # > 0: every cut moves forward
    energy = frame_energies_db(wave, frame)
    spans, start = [], 0
    while n - start > longest:
        hi = min(start + longest, n - shortest) // frame  # cuts go on frame boundaries: frame index = cut / frame
        lo = -(-(start + search_from) // frame)  # ceil
        cut = (lo + _quietest_run_middle(energy[lo : hi + 1], tolerance_db)) * frame if lo <= hi else start + longest
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans


def speech_regions(
    wave: torch.Tensor,
    sample_rate: int,
    min_pause: float = 1.0,
    pad: float = 0.1,
    frame_ms: float = 25.0,
    quiet_dbfs: float = -55.0,
    below_loud_db: float = 40.0,
) -> list[tuple[int, int]]:
    """Sample spans ``[(start, end), ...]`` of ``wave`` (N,) left after removing pauses.

    A frame is quiet when its energy is under both ``quiet_dbfs`` and the file's 95th-percentile
    frame energy minus ``below_loud_db``, or under -90 dBFS (digital silence); runs of quiet frames
    of at least ``min_pause`` seconds are pauses. Each region keeps ``pad`` seconds of its pauses on either side. A wave without any
    pause is one region; a wave that is all pause has none.
    """
    n = wave.shape[0]
    frame = max(1, int(round(frame_ms * sample_rate / 1000)))
    energy = frame_energies_db(wave, frame)
    if not len(energy):
        return []
    threshold = min(quiet_dbfs, float(np.percentile(energy, 95)) - below_loud_db)
    starts, ends = _runs((energy < threshold) | (energy < DIGITAL_SILENCE_DBFS))  # quiet runs, in frames
    min_frames, pad_samples = max(1, int(round(min_pause * 1000 / frame_ms))), int(pad * sample_rate)
    regions, start = [], 0
    for qs, qe in zip(starts, ends):
        if qe - qs < min_frames:
            continue
        ps, pe = int(qs) * frame, min(n, int(qe) * frame)  # the pause, in samples
        middle = (ps + pe) // 2
        if ps > 0:
            regions.append((start, min(ps + pad_samples, middle)))
        start = max(pe - pad_samples, middle) if pe < n else n
    if start < n:
        regions.append((start, n))
    return regions


VADS = ("energy", "silero", "none")


def silero_speech_regions(
    wave: torch.Tensor, sample_rate: int, min_pause: float = 1.0, pad: float = 0.1
) -> list[tuple[int, int]]:
    """Speech spans found by the Silero VAD (its ONNX model ships inside faster-whisper; 16 kHz audio):
    pauses of at least ``min_pause`` seconds left out, ``pad`` seconds kept on either side."""
    if sample_rate != 16000:
        raise ValueError(f"the Silero VAD reads 16 kHz audio, not {sample_rate} Hz")
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as exc:
        raise RuntimeError("--vad silero needs faster-whisper (pip install faster-whisper), or use --vad energy") from exc
    options = VadOptions(min_silence_duration_ms=int(min_pause * 1000), speech_pad_ms=int(pad * 1000))
    spans = get_speech_timestamps(wave.numpy().astype(np.float32), options, sampling_rate=sample_rate)
    return [(int(s["start"]), int(s["end"])) for s in spans]


def speech_chunks(
    wave: torch.Tensor,
    sample_rate: int,
    max_seconds: float = 20.0,
    min_seconds: float = 1.0,
    min_pause: float = 1.0,
    vad: str = "energy",
) -> list[tuple[int, int]]:
    """Speech regions (``vad``: ``energy``, :func:`speech_regions`; ``silero``, :func:`silero_speech_regions`;
    ``none``, the whole wave), each cut by :func:`split_on_silence` into chunks of at most ``max_seconds``."""
    if vad == "energy":
        regions = speech_regions(wave, sample_rate, min_pause=min_pause)
    elif vad == "silero":
        regions = silero_speech_regions(wave, sample_rate, min_pause=min_pause)
    elif vad == "none":
        regions = [(0, wave.shape[0])] if wave.shape[0] else []
    else:
        raise ValueError(f"unknown vad {vad!r}: one of {', '.join(VADS)}")
    chunks = []
    for start, end in regions:
        chunks += [
            (start + s, start + e)
            for s, e in split_on_silence(wave[start:end], sample_rate, max_seconds, min(min_seconds, max_seconds))
        ]
    return chunks
