"""The Python API: ``asr.load_model(...).transcribe(audio)``, with whisper's result shape.

import asr
model = asr.load_model()                 # the shipped model; or a model dir, a shipped name, a hub id
result = model.transcribe("talk.wav")   # {"text", "language", "duration", "segments": [{..., "words"}], "tokens"}
for seg in result["segments"]:
    print(seg["start"], seg["end"], seg["text"])
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from asr.data.audio import read_audio
from asr.decoding.recognizers import load_recognizer
from asr.decoding.transcribe import transcribe_wave
from asr.decoding.writers import to_dict


class Model:
    """A loaded recognizer (see :func:`load_model`)."""

    def __init__(self, recognizer):
        self.recognizer = recognizer

    def transcribe(
        self,
        audio: str | Path | np.ndarray | torch.Tensor,
        batch_size: int = 8,
        chunk_seconds: float = 20.0,
        vad: str = "energy",
        min_pause: float = 1.0,
    ) -> dict:
        """Transcribe a file (any format ``asr transcribe`` reads) or a 16 kHz mono waveform.

        Long audio is cut at quiet points into chunks of at most ``chunk_seconds``, decoded
        ``batch_size`` at a time; ``vad`` (energy | silero | none) and ``min_pause`` choose the pauses
        left out. Returns whisper's dict: ``text``, ``language``, ``segments``
        (``id``, ``start``, ``end``, ``text``, ``words`` with ``word``, ``start``, ``end``,
        ``probability``), plus ``duration`` and ``tokens`` (the units with their times).
        """
        rate = self.recognizer.sample_rate
        if isinstance(audio, (str, Path)):
            wave, _ = read_audio(audio, rate)
        else:
            wave = torch.as_tensor(np.asarray(audio, dtype=np.float32))
            if wave.dim() != 1:
                raise ValueError(f"a waveform must be 1-D mono samples at {rate} Hz, got shape {tuple(wave.shape)}")
        return to_dict(transcribe_wave(self.recognizer, wave, batch_size, chunk_seconds, vad, min_pause))


def load_model(
    name_or_path: str | Path | None = None,
    device: str = "auto",
    beam_size: int | None = None,
    cif_weight: float | None = None,
    decoding: str | None = None,
) -> Model:
    """Load a model for transcription: None (the model shipped with the package), a model dir
    (``exp/<tag>/final`` or an ``asr export`` dir), a shipped model's name or a Hugging Face hub id.
    ``device``: auto (cuda when present), cpu or cuda; ``beam_size``/``cif_weight``: speech-LLM
    decoding (default: the export's); ``decoding``: a Whisper C-Former's "read" or "parallel" (default:
    the model's)."""
    return Model(load_recognizer(name_or_path, device=device, beam_size=beam_size, cif_weight=cif_weight, decoding=decoding))
