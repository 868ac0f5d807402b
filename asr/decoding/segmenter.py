"""Cut long audio into chunks at quiet points, so a recognizer never sees more than ``max_seconds``.

The wave is framed into 25 ms frames (no overlap) and each frame's energy is taken in dB. While
more than ``max_seconds`` remain, the next cut is searched between ``max(min_seconds, max_seconds / 2)``
and ``max_seconds`` after the current chunk start (and at least ``min_seconds`` before the end of
the audio, so no chunk is shorter than ``min_seconds`` unless the whole file is): among the frames
within ``tolerance_db`` of the quietest one there, the longest run wins and the cut goes to its
middle, i.e. into the middle of the longest pause near the length limit. Chunks are contiguous:
together they cover every sample exactly once.
"""

from __future__ import annotations

import math

import numpy as np
import torch


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


def _quietest_run_middle(energy_db: np.ndarray, tolerance_db: float) -> int:
    """Index (into ``energy_db``) of the middle of the longest run of frames within ``tolerance_db`` of the minimum."""
    quiet = (energy_db <= energy_db.min() + tolerance_db).astype(np.int8)
    edges = np.diff(np.concatenate([[0], quiet, [0]]))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    longest = int(np.argmax(ends - starts))
    return int((starts[longest] + ends[longest]) // 2)


def split_on_silence(wave: torch.Tensor, sample_rate: int, max_seconds: float = 20.0, min_seconds: float = 1.0,
                     frame_ms: float = 25.0, tolerance_db: float = 3.0) -> list[tuple[int, int]]:
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
        cut = (lo + _quietest_run_middle(energy[lo:hi + 1], tolerance_db)) * frame if lo <= hi else start + longest
        spans.append((start, cut))
        start = cut
    spans.append((start, n))
    return spans
