"""Transcribe audio files with a trained stage-1 model dir (features are computed on the fly).

The model dir (``exp/<tag>/final``) holds the weights, the tokenizer and ``feat_info.json``, which
names the feature extractor to rebuild: Kaldi fbank or a frozen Whisper encoder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asr.data.audio import read_audio
from asr.decoding.cif_greedy import load_recognizer
from asr.features.extractors import build_extractor


@dataclass
class Transcript:
    text: str
    tokens: list[str] = field(default_factory=list)
    token_times: list[float] = field(default_factory=list)  # seconds: where CIF fired for each token
    duration: float = 0.0


class Transcriber:
    def __init__(self, model_dir: str | Path):
        self.model, self.tokenizer, self.feat_info = load_recognizer(model_dir)
        self.extractor = build_extractor(self.feat_info["feature_type"], self.feat_info.get("options") or {})
        # seconds per encoder frame seen by CIF
        self.frame_seconds = getattr(self.model.encoder, "frame_rate_divisor", 1) / self.feat_info["frame_rate_hz"]

    @torch.inference_mode()
    def transcribe_wave(self, wave: torch.Tensor, sample_rate: int = 16000) -> Transcript:
        feats = torch.as_tensor(self.extractor(wave), dtype=torch.float32)  # (T, F)
        result = self.model.recognize(feats.unsqueeze(0), torch.tensor([feats.shape[0]]))
        ids = result["tokens"][0]
        times = [round((f + 1) * self.frame_seconds, 3) for f in result["fire_frames"][0]]
        return Transcript(self.tokenizer.decode(ids), self.tokenizer.pieces(ids), times, round(wave.shape[0] / sample_rate, 3))

    def transcribe_file(self, path: str | Path) -> Transcript:
        wave, rate = read_audio(path, 16000)
        return self.transcribe_wave(wave, rate)


def write_transcript(transcript: Transcript, out_dir: Path, stem: str, fmt: str) -> list[Path]:
    """Write ``<stem>.txt`` and/or ``<stem>.json`` into ``out_dir`` (atomically)."""
    from asr.io_utils import write_text_atomic

    written = []
    if fmt in ("txt", "all"):
        write_text_atomic(out_dir / f"{stem}.txt", transcript.text + "\n")
        written.append(out_dir / f"{stem}.txt")
    if fmt in ("json", "all"):
        doc = {"text": transcript.text, "duration": transcript.duration,
               "tokens": [{"token": t, "time": s} for t, s in zip(transcript.tokens, transcript.token_times)]}
        write_text_atomic(out_dir / f"{stem}.json", json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        written.append(out_dir / f"{stem}.json")
    return written
