"""Whisper tiny.en encoder frames of people speaking, for the tests of what reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def librivox_frames(clips: list[tuple[int, float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(file index, seconds from its start) per clip -> unpadded encoder frames, padded into a batch
    (B, T, 384), and their lengths (B,). Skips the test without pocketsphinx-testdata (Debian)."""
    wavs = sorted(LIBRIVOX.glob("*.wav"))
    if not wavs:
        pytest.skip("pocketsphinx-testdata (Debian) not installed")
    from asr.data.audio import read_audio
    from asr.data.batching import pad_features
    from asr.features.whisper_encoder import WhisperEncoderFrontend, whisper_log_mel

    encoder, frames = WhisperEncoderFrontend.from_packaged().eval(), []
    for index, seconds in clips:
        mel = whisper_log_mel(read_audio(wavs[index])[0][: int(seconds * 16000)])
        with torch.no_grad():
            frames.append(encoder(mel[None], torch.tensor([mel.shape[0]]))[0][0])
    return pad_features(frames)
