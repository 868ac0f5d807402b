"""An exported speech-LLM dir (``asr export``) as a Recognizer for ``asr transcribe``.

    waves -> features (the stage-1 feature extractor) -> SpeechLlm.generate (beam search, CIF fusion)
          -> LLM transcript; word times from the CIF fires of the same pass, aligned word by word

An empty LLM output falls back to the CIF transcript, as in stage-2 decoding.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from asr.data.image import load_picture
from asr.decoding.cif_recognizer import timed_cif_hypothesis, wave_features
from asr.decoding.hypothesis import Hypothesis, align_words
from asr.features.extractors import build_extractor
from asr.models.loading import load_llm_decoder


class SpeechLlmRecognizer:
    """A stage-2 (speech LLM) or stage-3 (multimodal) dir; the latter with ``image``, a picture that goes
    with every chunk of the audio (without one it transcribes from the speech alone)."""

    sample_rate = 16000

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        beam_size: int = 1,
        cif_weight: float = 0.0,
        image: str | Path | None = None,
        picture_guidance: float = 0.0,
    ):
        model_dir = Path(model_dir)
        model, self.model, stage1 = load_llm_decoder(model_dir, device=device)
        model.eval()
        self.multimodal = model if model is not self.model else None
        self.picture = None  # (1, 3, h, w) in [0, 1]
        if image is not None:
            if self.multimodal is None:
                raise ValueError(f"{model_dir} is a speech-only (stage-2) model: it takes no picture")
            self.picture = load_picture(image, self.multimodal.x2l.picture_size())
        if picture_guidance and self.picture is None:
            raise ValueError("picture guidance needs a picture (--image)")
        self.picture_guidance = picture_guidance
        self.units = self.model.stage1_units()  # loaded with the model
        feat_info = json.loads((stage1 / "feat_info.json").read_text())
        self.extractor = build_extractor(feat_info["feature_type"], feat_info.get("options") or {})
        self.frame_seconds = self.model.stage1.frame_rate_divisor / feat_info["frame_rate_hz"]
        self.beam_size, self.cif_weight = beam_size, cif_weight

    def _generate(self, feats: torch.Tensor, lengths: torch.Tensor) -> list[dict]:
        opts = dict(num_beams=self.beam_size, cif_weight=self.cif_weight)
        if self.multimodal is None:
            return self.model.generate(feats, lengths, **opts)
        if self.picture is None:
            return self.multimodal.generate(feats, lengths, **opts)
        images = self.picture.expand(feats.shape[0], -1, -1, -1)
        return self.multimodal.generate(feats, lengths, images=images, picture_guidance=self.picture_guidance, **opts)

    @torch.inference_mode()
    def __call__(self, waves: list[torch.Tensor]) -> list[Hypothesis]:
        feats, lengths = wave_features(self.extractor, waves, self.sample_rate)  # (B, T_max, F), (B,)
        hyps = []
        for wave, res in zip(waves, self._generate(feats, lengths)):
            cif = timed_cif_hypothesis(
                self.units,
                res["cif_tokens"],
                res["fire_frames"],
                torch.tensor(res["alphas"]),
                self.frame_seconds,
                wave.shape[0] / self.sample_rate,
            )
            text = res["text"] or cif.text
            hyps.append(Hypothesis(text, align_words(text.split(), cif.words), cif.tokens, cif.token_times, cif.token_starts))
        return hyps
