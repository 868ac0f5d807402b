"""A stage-1 model dir as a Recognizer: waves -> features -> greedy CIF -> tokens with times.

    wave_features          16 kHz waves -> padded features of the model's extractor
    cif_token_times        a token's start and end from the CIF weights and fire frames
    timed_cif_hypothesis   tokens + fires -> Hypothesis with token and word times
    CifRecognizer          the stage-1 model dir's recognizer (``asr transcribe`` on a CIF export)

The speech LLM's recognizer (``llm_recognizer``) reuses the feature and timing helpers.
"""

from __future__ import annotations

from pathlib import Path

import torch

from asr.data.batching import pad_features
from asr.decoding.cif_greedy import load_cif_model
from asr.decoding.hypothesis import Hypothesis, words_from_pieces
from asr.features.extractors import build_extractor
from asr.models.whisper_cformer import WhisperCFormer


def cif_token_times(
    alphas: torch.Tensor, fire_frames: list[int], frame_seconds: float, min_alpha: float = 0.05
) -> tuple[list[float], list[float]]:
    """Start and end time (seconds) of each CIF token.

    alphas (T',): the CIF weight of each encoder frame; fire_frames: the frame each token fired on
    (non-decreasing). A token ends at the end of its fire frame, ``(f + 1) * frame_seconds``, and
    starts at the first frame after the previous token's fire frame (frame 0 for the first token)
    whose weight exceeds ``min_alpha`` (else on its own fire frame): after a pause, where the
    weights are ~0, the next token starts where speech resumes, not where the previous token ended.
    """
    starts, ends, prev = [], [], -1
    for f in fire_frames:
        weighted = torch.nonzero(alphas[prev + 1 : f + 1] > min_alpha)
        first = prev + 1 + int(weighted[0, 0]) if len(weighted) else f
        starts.append(round(first * frame_seconds, 3))
        ends.append(round((f + 1) * frame_seconds, 3))
        prev = f
    return starts, ends


MIN_SECONDS = 0.2  # shorter waves are padded with zeros (the encoder's convolutions need a few frames)


def wave_features(extractor, waves: list[torch.Tensor], sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz mono waves (N_i,) -> padded features (B, T_max, F) and lengths (B,).

    Features are extracted per wave (an extractor takes one wave); waves shorter than MIN_SECONDS
    get trailing zeros first.
    """
    min_len = int(MIN_SECONDS * sample_rate)
    return pad_features([extractor(torch.nn.functional.pad(w, (0, max(0, min_len - w.shape[0])))) for w in waves])


def timed_cif_hypothesis(
    units,
    tokens: list[int],
    fire_frames: list[int],
    alphas: torch.Tensor,
    frame_seconds: float,
    duration: float,
    probs: list[float] | None = None,
) -> Hypothesis:
    """A CIF result of one wave -> Hypothesis with token and word times clipped to ``duration``.

    alphas (T',): the CIF weights of the wave's own frames; probs: each token's probability.
    """
    starts, ends = cif_token_times(alphas, fire_frames, frame_seconds)
    ends = [min(e, round(duration, 3)) for e in ends]
    starts = [min(s, e) for s, e in zip(starts, ends)]
    pieces = units.pieces(tokens)
    words = words_from_pieces(pieces, starts, ends, marker=units.word_marker, probs=probs)
    return Hypothesis(units.decode(tokens), words, pieces, ends, starts, list(probs or []))


class CifRecognizer:
    """A stage-1 model dir as a :class:`~asr.decoding.hypothesis.Recognizer` (greedy CIF decoding)."""

    sample_rate = 16000

    def __init__(self, model_dir: str | Path, device: str = "cpu", decoding: str | None = None):
        self.model, self.tokenizer, feat_info = load_cif_model(model_dir)
        self.decoding = decoding  # None: the model's own (its config's)
        if isinstance(self.model, WhisperCFormer) and (decoding or self.model.config.decoding) == "read":
            self.model.load_reader()  # loaded with the model, not on the first batch
        self.device = torch.device(device)
        self.model.to(self.device)
        self.extractor = build_extractor(feat_info["feature_type"], feat_info.get("options") or {})
        # seconds per encoder frame seen by CIF
        self.frame_seconds = self.model.frame_rate_divisor / feat_info["frame_rate_hz"]

    @torch.inference_mode()
    def __call__(self, waves: list[torch.Tensor]) -> list[Hypothesis]:
        """waves: 16 kHz mono (N_i,) -> one hypothesis each, times in seconds from the wave's start.

        The model runs on the padded batch (B, T_max, F); times are clipped to each wave's duration.
        """
        feats, lengths = wave_features(self.extractor, waves, self.sample_rate)  # (B, T_max, F), (B,)
        result = self.model.transcribe(feats.to(self.device), lengths.to(self.device), self.decoding)
        alphas = result["alphas"].float().cpu()  # (B, T')
        logits = result["logits"]
        probs = logits.float().softmax(-1).amax(-1).cpu() if logits is not None else None  # (B, N)
        return [
            timed_cif_hypothesis(
                self.tokenizer,
                result["tokens"][b],
                result["fire_frames"][b],
                alphas[b, : result["frame_lengths"][b]],
                self.frame_seconds,
                wave.shape[0] / self.sample_rate,
                [round(p, 4) for p in probs[b, : len(result["tokens"][b])].tolist()] if probs is not None else None,
            )
            for b, wave in enumerate(waves)
        ]
