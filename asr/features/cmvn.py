"""Global CMVN statistics in Kaldi's format (a model applies them: :class:`asr.models.cmvn.GlobalCMVN`).

Kaldi stores CMVN stats as a (2, D+1) float64 matrix: row 0 holds the per-dim sums and, in the
last column, the frame count; row 1 holds the per-dim sums of squares. ``compute-cmvn-stats``
writes it; ``apply-cmvn`` turns it into mean and 1/std.
"""

from __future__ import annotations

from pathlib import Path

import kaldiio
import numpy as np
from tqdm import tqdm

from asr.io_utils import atomic_path


def compute_cmvn_stats(feats_scp: str | Path) -> np.ndarray:
    """Accumulate global stats over every matrix of ``feats_scp``; returns the (2, D+1) Kaldi matrix."""
    stats = None
    for _, mat in tqdm(kaldiio.load_scp_sequential(str(feats_scp)), desc="cmvn", mininterval=5):
        mat = np.asarray(mat, dtype=np.float64)  # (T, D)
        if stats is None:
            stats = np.zeros((2, mat.shape[1] + 1), dtype=np.float64)
        stats[0, :-1] += mat.sum(0)
        stats[1, :-1] += (mat**2).sum(0)
        stats[0, -1] += mat.shape[0]
    if stats is None:
        raise ValueError(f"{feats_scp}: no features to compute CMVN stats from")
    return stats


def write_cmvn_stats(path: str | Path, stats: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        kaldiio.save_mat(str(tmp), stats)


def read_cmvn_stats(path: str | Path) -> np.ndarray:
    return np.asarray(kaldiio.load_mat(str(path)), dtype=np.float64)
