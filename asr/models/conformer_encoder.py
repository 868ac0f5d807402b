"""Conformer speech encoder: conv subsampling (4x) or a plain projection + speechbrain Conformer blocks.

- ``subsampling="conv2d4"``: fbank (B, T, 80) at 100 frames/s -> hidden (B, ~T/4, d_model) at 25 frames/s,
  the encoder trained from scratch.
- ``subsampling="none"``: (B, T, F) -> (B, T, d_model), trainable Conformer layers on top of the
  (cached) outputs of a frozen encoder.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from speechbrain.lobes.models.transformer.Conformer import ConformerEncoder as SBConformerEncoder
from speechbrain.nnet.attention import RelPosEncXL
from torch import nn


@dataclass
class ConformerConfig:
    input_dim: int = 80
    d_model: int = 256
    num_layers: int = 6
    num_heads: int = 4
    ffn_dim: int = 1024
    kernel_size: int = 15
    dropout: float = 0.1
    subsampling_channels: int = 128
    subsampling: str = "conv2d4"  # "conv2d4" | "none"


def subsampled_lengths(lengths: torch.Tensor) -> torch.Tensor:
    """Frames left after two (kernel 3, stride 2) convolutions without padding."""
    return ((lengths - 3) // 2 + 1 - 3) // 2 + 1


class Conv2dSubsampling4(nn.Module):
    """(B, T, F) -> (B, T', d_model) with T' = ((T-3)//2+1-3)//2+1."""

    def __init__(self, input_dim: int, d_model: int, channels: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
        )
        freq = ((input_dim - 3) // 2 + 1 - 3) // 2 + 1
        self.out = nn.Linear(channels * freq, d_model)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.conv(x.unsqueeze(1))  # (B, C, T', F')
        b, c, t, f = x.shape
        x = self.out(x.transpose(1, 2).reshape(b, t, c * f))  # (B, T', d_model)
        return x, subsampled_lengths(lengths).clamp(min=1)


class _ZeroPadding(nn.Module):
    """Wraps a conv module's pointwise bottleneck so padded frames are zero before the depthwise conv.

    speechbrain masks the convolution module's output but not its input, so without this the frames
    next to the end of a short utterance would see its neighbours' padding and a batched forward
    would differ from a single-utterance one.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.pad_mask: torch.Tensor | None = None  # (B, T) True = padding, set by the encoder per call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)  # (B, C, T)
        if self.pad_mask is not None:
            out = out.masked_fill(self.pad_mask[:, None, :], 0.0)
        return out


class LinearInput(nn.Module):
    """(B, T, F) -> (B, T, d_model) without changing the frame rate."""

    def __init__(self, input_dim: int, d_model: int):
        super().__init__()
        self.out = nn.Sequential(nn.Linear(input_dim, d_model), nn.LayerNorm(d_model))

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.out(x), lengths


class ConformerEncoder(nn.Module):
    def __init__(self, config: ConformerConfig):
        super().__init__()
        self.config = config
        self.output_dim = config.d_model
        if config.subsampling == "conv2d4":
            self.subsampling = Conv2dSubsampling4(config.input_dim, config.d_model, config.subsampling_channels)
            self.frame_rate_divisor = 4
        elif config.subsampling == "none":
            self.subsampling = LinearInput(config.input_dim, config.d_model)
            self.frame_rate_divisor = 1
        else:
            raise ValueError(f"unknown subsampling {config.subsampling!r}; expected 'conv2d4' or 'none'")
        self.pos_enc = RelPosEncXL(config.d_model)
        self.layers = SBConformerEncoder(
            num_layers=config.num_layers,
            d_model=config.d_model,
            d_ffn=config.ffn_dim,
            nhead=config.num_heads,
            kernel_size=config.kernel_size,
            dropout=config.dropout,
            attention_type="RelPosMHAXL",
        )
        self._masked_convs = []
        for layer in self.layers.layers:
            conv = layer.convolution_module
            conv.bottleneck = _ZeroPadding(conv.bottleneck)
            self._masked_convs.append(conv.bottleneck)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, out_lengths = self.subsampling(feats, lengths)  # (B, T', d)
        pad_mask = torch.arange(x.shape[1], device=x.device)[None, :] >= out_lengths[:, None]  # True = padding
        for conv in self._masked_convs:
            conv.pad_mask = pad_mask
        x, _ = self.layers(x, src_key_padding_mask=pad_mask, pos_embs=self.pos_enc(x))
        return x, out_lengths


class FrozenFeatureEncoder(nn.Module):
    """For features that already are encoder outputs (a frozen encoder cached to ark/scp).

    Lowers the frame rate by ``pool`` before CIF, either by averaging frames (``mode="mean"``) or
    by stacking them into one ``pool * F`` vector (``mode="stack"``, low frame rate features as in
    Paraformer's LFR), which keeps the order of the frames inside each window.
    (B, T, F) -> (B, ceil(T / pool), F or pool * F)
    """

    def __init__(self, input_dim: int, pool: int = 1, mode: str = "mean"):
        super().__init__()
        if mode not in ("mean", "stack"):
            raise ValueError(f"unknown frame reduction {mode!r}; expected 'mean' or 'stack'")
        self.pool, self.mode = pool, mode
        self.output_dim = input_dim * pool if mode == "stack" and pool > 1 else input_dim
        self.frame_rate_divisor = pool

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pool == 1:
            return feats, lengths
        b, t, d = feats.shape
        pad = (-t) % self.pool
        # zero the padding frames so windows at an utterance's end see zeros, whatever the batch
        mask = (torch.arange(t + pad, device=feats.device)[None] < lengths[:, None]).to(feats.dtype)  # (B, T+pad)
        x = nn.functional.pad(feats, (0, 0, 0, pad)) * mask[..., None]
        out_lengths = (lengths + self.pool - 1) // self.pool
        if self.mode == "stack":
            return x.reshape(b, -1, self.pool * d), out_lengths
        count = mask.reshape(b, -1, self.pool).sum(2).clamp(min=1.0)
        return x.reshape(b, -1, self.pool, d).sum(2) / count[..., None], out_lengths
