"""An exported speech-LLM dir (``asr export``) as a Recognizer for ``asr transcribe``.

    waves -> features (the stage-1 feature extractor) -> SpeechLlm.generate (beam search)
          -> LLM transcript; word times from the CIF fires of the same pass, aligned word by word

An empty LLM output falls back to the CIF transcript, as in stage-2 decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from asr.decoding.hypothesis import Hypothesis, align_words, words_from_pieces
from asr.decoding.transcribe import CifRecognizer, cif_token_times
from asr.features.extractors import build_extractor
from asr.tokenizer import load_tokenizer
from asr.training.data import pad_features
from asr.training.train_speech_llm import load_speech_llm, stage1_dir_of


class SpeechLlmRecognizer:
    sample_rate = 16000

    def __init__(self, model_dir: str | Path, device: str = "cpu", beam_size: int = 1):
        model_dir = Path(model_dir)
        self.model = load_speech_llm(model_dir, device=device).eval()
        stage1 = stage1_dir_of(model_dir)
        self.units = load_tokenizer(stage1 / "tokenizer")
        feat_info = json.loads((stage1 / "feat_info.json").read_text())
        self.extractor = build_extractor(feat_info["feature_type"], feat_info.get("options") or {})
        self.frame_seconds = getattr(self.model.stage1.encoder, "frame_rate_divisor", 1) / feat_info["frame_rate_hz"]
        self.beam_size = beam_size

    @classmethod
    def from_export_dir(cls, model_dir: str | Path, device: str = "cpu", beam_size: int = 1) -> "SpeechLlmRecognizer":
        return cls(model_dir, device=device, beam_size=beam_size)

    @torch.inference_mode()
    def __call__(self, waves: list[torch.Tensor]) -> list[Hypothesis]:
        min_len = int(CifRecognizer.MIN_SECONDS * self.sample_rate)
        padded = [torch.nn.functional.pad(w, (0, max(0, min_len - w.shape[0]))) for w in waves]
        feats, lengths = pad_features([self.extractor(w) for w in padded])  # (B, T_max, F), (B,)
        hyps = []
        for wave, res in zip(waves, self.model.generate(feats, lengths, num_beams=self.beam_size)):
            duration = round(wave.shape[0] / self.sample_rate, 3)
            starts, ends = cif_token_times(torch.tensor(res["alphas"]), res["fire_frames"], self.frame_seconds)
            ends = [min(e, duration) for e in ends]
            starts = [min(s, e) for s, e in zip(starts, ends)]
            pieces = self.units.pieces(res["cif_tokens"])
            cif_words = words_from_pieces(pieces, starts, ends, marker=self.units.word_marker)
            text = res["text"] or self.units.decode(res["cif_tokens"])
            hyps.append(Hypothesis(text, align_words(text.split(), cif_words), pieces, ends, starts))
        return hyps
