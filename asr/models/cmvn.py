"""Global CMVN as the first layer of a model: fixed mean and 1/std from Kaldi-format stats
(:mod:`asr.features.cmvn` computes and reads them), saved with the model's weights."""

from __future__ import annotations

import numpy as np
import torch


class GlobalCMVN(torch.nn.Module):
    """Normalize features to zero mean, unit variance with fixed global stats (a buffer, saved with the model)."""

    def __init__(self, stats: np.ndarray | None = None, dim: int | None = None, norm_vars: bool = True):
        super().__init__()
        if stats is None:
            if dim is None:
                raise ValueError("GlobalCMVN needs stats or dim")
            mean, istd = np.zeros(dim), np.ones(dim)
        else:
            count = stats[0, -1]
            mean = stats[0, :-1] / count
            var = np.maximum(stats[1, :-1] / count - mean**2, 1e-10)
            istd = 1.0 / np.sqrt(var) if norm_vars else np.ones_like(mean)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("istd", torch.tensor(istd, dtype=torch.float32))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        # feats: (B, T, D)
        return (feats - self.mean) * self.istd
