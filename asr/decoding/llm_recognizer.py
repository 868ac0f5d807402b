"""An exported speech-LLM dir (``asr export``) as a Recognizer for ``asr transcribe``.

    waves -> features (the stage-1 feature extractor) -> SpeechLlm.generate (beam search, CIF fusion)
          -> LLM transcript; word times from the CIF fires of the same pass, aligned word by word

An empty LLM output falls back to the CIF transcript, as in stage-2 decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from asr.decoding.hypothesis import Hypothesis, align_words
from asr.decoding.transcribe import timed_cif_hypothesis, wave_features
from asr.features.extractors import build_extractor
from asr.training.train_speech_llm import load_speech_llm, stage1_dir_of


class SpeechLlmRecognizer:
    sample_rate = 16000

    def __init__(self, model_dir: str | Path, device: str = "cpu", beam_size: int = 1, cif_weight: float = 0.0):
        model_dir = Path(model_dir)
        self.model = load_speech_llm(model_dir, device=device).eval()
        stage1 = stage1_dir_of(model_dir)
        self.units = self.model.stage1_units()  # loaded with the model
        feat_info = json.loads((stage1 / "feat_info.json").read_text())
        self.extractor = build_extractor(feat_info["feature_type"], feat_info.get("options") or {})
        self.frame_seconds = getattr(self.model.stage1.encoder, "frame_rate_divisor", 1) / feat_info["frame_rate_hz"]
        self.beam_size, self.cif_weight = beam_size, cif_weight

    @classmethod
    def from_export_dir(cls, model_dir: str | Path, device: str = "cpu", beam_size: int = 1,
                        cif_weight: float = 0.0) -> "SpeechLlmRecognizer":
        return cls(model_dir, device=device, beam_size=beam_size, cif_weight=cif_weight)

    @torch.inference_mode()
    def __call__(self, waves: list[torch.Tensor]) -> list[Hypothesis]:
        feats, lengths = wave_features(self.extractor, waves, self.sample_rate)  # (B, T_max, F), (B,)
        hyps = []
        for wave, res in zip(waves, self.model.generate(feats, lengths, num_beams=self.beam_size, cif_weight=self.cif_weight)):
            cif = timed_cif_hypothesis(self.units, res["cif_tokens"], res["fire_frames"], torch.tensor(res["alphas"]),
                                       self.frame_seconds, wave.shape[0] / self.sample_rate)
            text = res["text"] or cif.text
            hyps.append(Hypothesis(text, align_words(text.split(), cif.words), cif.tokens, cif.token_times, cif.token_starts))
        return hyps
