"""X-LLM stage 1: speech encoder -> C-Former (CIF + transformer layers) -> token classifier.

    feats (B, T, F), feat_lengths (B,)
      -> global CMVN -> SpecAugment (training only)
      -> encoder (Conformer trained here, or cached outputs of a frozen encoder,   (B, T', E)
                  optionally with trainable Conformer layers on top)
      -> projection to the C-Former width                                          (B, T', D)
            \\-> optional CTC head on these frames                                  (B, T', V)
      -> CIF predictor: one vector per output token                                (B, N, D)
      -> C-Former transformer layers over the CIF vectors                          (B, N, D)
      -> token classifier                                                           (B, N, V)

The C-Former's outputs (before the classifier) are what X-LLM's S-Adapter feeds to the LLM.
Loss: CE on the CIF outputs (teacher-forced token count) + quantity loss, + optional CTC.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from speechbrain.augment.freq_domain import SpectrogramDrop
from torch import nn

from asr.config import dataclass_from_dict
from asr.data.batching import IGNORE_ID
from asr.io_utils import load_weights, save_config_and_weights
from asr.models.cif import CifPredictor
from asr.models.cmvn import GlobalCMVN
from asr.models.conformer_encoder import ConformerConfig, ConformerEncoder, FrozenFeatureEncoder


@dataclass
class SpecAugmentConfig:
    enabled: bool = True
    time_masks: int = 2
    time_mask_max: int = 40  # frames
    freq_masks: int = 2
    freq_mask_max: int = 15  # bins


@dataclass
class CifAsrConfig:
    kind: str = "cif_asr"  # the model dir's kind (asr.models.auto.load_stage1 dispatches on it)
    vocab_size: int = 500
    feat_dim: int = 80
    encoder_type: str = "conformer"  # "conformer" (trained) | "frozen" (features are frozen-encoder outputs)
    conformer: ConformerConfig = field(default_factory=ConformerConfig)
    frozen_pool: int = 1  # lower the frozen encoder's frame rate by this factor before CIF
    frozen_pool_mode: str = "mean"  # "mean" (average the frames) | "stack" (concatenate them)
    frozen_layers: int = 0  # trainable layers (dims from `conformer`) over the frozen frames
    frozen_layer_type: str = "conformer"  # "conformer" (speechbrain) | "transformer" (torch, cheaper)
    d_model: int = 256
    cformer_layers: int = 2
    cformer_heads: int = 4
    cformer_ffn: int = 1024
    dropout: float = 0.1
    cif_kernel_size: int = 3
    cif_tail_threshold: float = 0.45
    ctc_weight: float = 0.3
    quantity_weight: float = 1.0
    label_smoothing: float = 0.1
    specaug: SpecAugmentConfig = field(default_factory=SpecAugmentConfig)
    blank_id: int = 0
    # "linear": a free token classifier; "tied": cosine scores against the LLM's frozen input
    # embeddings of the units (LLM-token units only; tied_dim = the LLM's hidden size)
    classifier: str = "linear"
    tied_dim: int = 0

    @classmethod
    def from_dict(cls, d: dict) -> CifAsrConfig:
        return dataclass_from_dict(cls, d, "model config")


class SinusoidalPositions(nn.Module):
    def __init__(self, d_model: int, max_len: int = 4096):
        super().__init__()
        pos = torch.arange(max_len)[:, None]
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pe[: x.shape[1]]


class SpecAugment(nn.Module):
    """Time and frequency masking (speechbrain's SpectrogramDrop), only in training mode."""

    def __init__(self, c: SpecAugmentConfig):
        super().__init__()
        self.time = SpectrogramDrop(
            drop_length_low=1, drop_length_high=c.time_mask_max, drop_count_low=0, drop_count_high=c.time_masks, dim=1
        )
        self.freq = SpectrogramDrop(
            drop_length_low=1, drop_length_high=c.freq_mask_max, drop_count_low=0, drop_count_high=c.freq_masks, dim=2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.freq(self.time(x)) if self.training else x


class TransformerFrameEncoder(nn.Module):
    """Plain pre-norm transformer layers over frames (torch's fused attention): (B, T, F) -> (B, T, d_model)."""

    frame_rate_divisor = 1

    def __init__(self, c: ConformerConfig):
        super().__init__()
        self.output_dim = c.d_model
        self.inp = nn.Sequential(nn.Linear(c.input_dim, c.d_model), nn.LayerNorm(c.d_model))
        self.positions = SinusoidalPositions(c.d_model)
        layer = nn.TransformerEncoderLayer(c.d_model, c.num_heads, c.ffn_dim, c.dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, c.num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pad = lengths_to_padding_mask(lengths, x.shape[1])
        return self.layers(self.positions(self.inp(x)), src_key_padding_mask=pad), lengths


class StackedEncoder(nn.Module):
    """Two encoders in a row (a frozen-feature front end, then trainable layers)."""

    def __init__(self, first: nn.Module, second: nn.Module):
        super().__init__()
        self.first, self.second = first, second
        self.output_dim = second.output_dim
        self.frame_rate_divisor = first.frame_rate_divisor * second.frame_rate_divisor

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.second(*self.first(x, lengths))


def lengths_to_padding_mask(lengths: torch.Tensor, max_len: int | None = None) -> torch.Tensor:
    """(B,) -> (B, T) bool, True at padding."""
    max_len = int(lengths.max()) if max_len is None else max_len
    return torch.arange(max_len, device=lengths.device)[None, :] >= lengths[:, None]


class TiedUnitClassifier(nn.Module):
    """Scores against fixed unit embeddings (the LLM's input embeddings of the unit tokens).

        hidden (B, N, D) -> query (B, N, E) -> scale * cos(query, embedding of each unit) (B, N, V)

    Units 0 and 1 (blank, unk) have no LLM token: their embeddings are learned. The table of the
    other units is a buffer (saved with the model, never trained), set by :meth:`set_embeddings`.
    """

    def __init__(self, d_model: int, embed_dim: int, vocab_size: int):
        super().__init__()
        if embed_dim <= 0:
            raise ValueError("classifier 'tied' needs tied_dim (the LLM hidden size) > 0")
        self.query = nn.Linear(d_model, embed_dim)
        self.special = nn.Parameter(torch.randn(2, embed_dim) * 0.02)
        self.register_buffer("unit_embeddings", torch.zeros(vocab_size - 2, embed_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(16.0)))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def set_embeddings(self, table: torch.Tensor) -> None:
        """table (V - 2, E): the LLM input embeddings of units 2..V-1."""
        self.unit_embeddings.copy_(table.to(self.unit_embeddings.dtype))

    def table(self) -> torch.Tensor:
        return torch.cat([self.special, self.unit_embeddings], dim=0)  # (V, E)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        q = F.normalize(self.query(hidden), dim=-1)
        return self.log_scale.exp() * q @ F.normalize(self.table(), dim=-1).T + self.bias


class CifAsrModel(nn.Module):
    def __init__(self, config: CifAsrConfig, cmvn_stats: np.ndarray | None = None):
        super().__init__()
        self.config = c = config
        self.cmvn = GlobalCMVN(cmvn_stats, dim=c.feat_dim)
        self.specaug = SpecAugment(c.specaug) if c.specaug.enabled else None
        if c.encoder_type == "conformer":
            c.conformer.input_dim = c.feat_dim
            self.encoder = ConformerEncoder(c.conformer)
        elif c.encoder_type == "frozen":
            self.encoder = FrozenFeatureEncoder(c.feat_dim, pool=c.frozen_pool, mode=c.frozen_pool_mode)
            if c.frozen_layers:
                top = dataclasses.replace(
                    c.conformer, input_dim=self.encoder.output_dim, num_layers=c.frozen_layers, subsampling="none"
                )
                layers = ConformerEncoder(top) if c.frozen_layer_type == "conformer" else TransformerFrameEncoder(top)
                self.encoder = StackedEncoder(self.encoder, layers)
        else:
            raise ValueError(f"unknown encoder_type {c.encoder_type!r}")
        self.proj = nn.Sequential(nn.Linear(self.encoder.output_dim, c.d_model), nn.LayerNorm(c.d_model), nn.Dropout(c.dropout))
        self.ctc_head = nn.Linear(c.d_model, c.vocab_size) if c.ctc_weight > 0 else None
        self.cif = CifPredictor(c.d_model, kernel_size=c.cif_kernel_size, dropout=c.dropout, tail_threshold=c.cif_tail_threshold)
        self.positions = SinusoidalPositions(c.d_model)
        layer = nn.TransformerEncoderLayer(
            c.d_model, c.cformer_heads, c.cformer_ffn, c.dropout, batch_first=True, norm_first=True
        )
        self.cformer = nn.TransformerEncoder(layer, c.cformer_layers, enable_nested_tensor=False)
        self.cformer_norm = nn.LayerNorm(c.d_model)
        if c.classifier == "linear":
            self.classifier = nn.Linear(c.d_model, c.vocab_size)
        elif c.classifier == "tied":
            self.classifier = TiedUnitClassifier(c.d_model, c.tied_dim, c.vocab_size)
        else:
            raise ValueError(f"unknown classifier {c.classifier!r} (linear | tied)")

    @property
    def frame_rate_divisor(self) -> int:
        """Input feature frames per frame CIF sees (fire frames and alphas count those frames)."""
        return getattr(self.encoder, "frame_rate_divisor", 1)

    @property
    def hidden_dim(self) -> int:
        """Width of the per-token hidden states ``recognize`` returns (what the S-Adapter reads)."""
        return self.config.d_model

    # ---- the forward pieces -------------------------------------------------------------------
    def encode(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, T, F) -> frames for CIF (B, T', D), lengths (B,)."""
        x = self.cmvn(feats)
        if self.specaug is not None:
            x = self.specaug(x)
        x, lengths = self.encoder(x, feat_lengths)
        return self.proj(x), lengths

    def cformer_forward(self, frames: torch.Tensor, frame_lengths: torch.Tensor, target_lengths: torch.Tensor | None = None):
        """CIF + transformer layers. Returns (token vectors (B, N, D), token lengths (B,), CifOutput)."""
        frame_mask = ~lengths_to_padding_mask(frame_lengths, frames.shape[1])  # True = valid
        cif_out = self.cif(frames, frame_mask, target_lengths)
        tokens, token_lengths = cif_out.outputs, cif_out.lengths  # (B, N, D), (B,)
        if tokens.shape[1] == 0:
            return tokens, token_lengths, cif_out
        pad = lengths_to_padding_mask(token_lengths, tokens.shape[1])
        # an utterance with no fires would be all padding: let it attend to its (zero) first slot
        pad[:, 0] = False
        hidden = self.cformer(self.positions(tokens), src_key_padding_mask=pad)
        return self.cformer_norm(hidden), token_lengths, cif_out

    # ---- training ------------------------------------------------------------------------------
    def forward(self, feats, feat_lengths, targets, target_lengths) -> dict[str, torch.Tensor]:
        """feats (B,T,F), targets (B,L) padded with IGNORE_ID. Returns losses and accuracy."""
        c = self.config
        frames, frame_lengths = self.encode(feats, feat_lengths)
        hidden, _, cif_out = self.cformer_forward(frames, frame_lengths, target_lengths)
        logits = self.classifier(hidden)  # (B, L, V)
        L = targets.shape[1]
        logits = logits[:, :L]
        if logits.shape[1] < L:  # cannot happen with teacher forcing, but keep shapes safe
            logits = F.pad(logits, (0, 0, 0, L - logits.shape[1]))
        ce = F.cross_entropy(
            logits.reshape(-1, c.vocab_size), targets.reshape(-1), ignore_index=IGNORE_ID, label_smoothing=c.label_smoothing
        )
        qty = cif_out.quantity_loss(target_lengths)
        loss = ce + c.quantity_weight * qty
        out = {"ce": ce.detach(), "quantity": qty.detach()}
        if self.ctc_head is not None:
            log_probs = self.ctc_head(frames).log_softmax(-1).transpose(0, 1)  # (T', B, V)
            ctc_targets = targets.clamp(min=0)
            ctc = F.ctc_loss(log_probs, ctc_targets, frame_lengths, target_lengths, blank=c.blank_id, zero_infinity=True)
            loss = loss + c.ctc_weight * ctc
            out["ctc"] = ctc.detach()
        valid = targets != IGNORE_ID
        out["acc"] = ((logits.argmax(-1) == targets) & valid).sum().float() / valid.sum().clamp(min=1)
        out["loss"] = loss
        return out

    # ---- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def recognize(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> dict:
        """Greedy CIF decoding. Returns token ids per utterance, fire frames and frame rate info."""
        frames, frame_lengths = self.encode(feats, feat_lengths)
        hidden, token_lengths, cif_out = self.cformer_forward(frames, frame_lengths)
        logits = self.classifier(hidden) if hidden.shape[1] else None  # (B, N, V)
        ids = logits.argmax(-1) if logits is not None else hidden.new_zeros(hidden.shape[:2], dtype=torch.long)
        tokens = [ids[b, : int(token_lengths[b])].tolist() for b in range(ids.shape[0])]
        fires = [cif_out.fire_frames[b, : int(token_lengths[b])].tolist() for b in range(ids.shape[0])]
        return {
            "tokens": tokens,
            "fire_frames": fires,
            "frame_lengths": frame_lengths.tolist(),
            "hidden": hidden,
            "logits": logits,
            "token_lengths": token_lengths,
            "alphas": cif_out.alphas,
        }  # alphas (B, T'): CIF weights per frame

    def transcribe(self, feats: torch.Tensor, feat_lengths: torch.Tensor, decoding: str | None = None) -> dict:
        """The model's transcript: greedy CIF (:meth:`recognize`); ``decoding`` None or "parallel"."""
        if decoding not in (None, "parallel"):
            raise ValueError(f"a {self.config.kind} model decodes in one way only ('parallel'), not {decoding!r}")
        return self.recognize(feats, feat_lengths)

    # ---- persistence (transformers style) ------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        save_config_and_weights(out_dir, "config.json", asdict(self.config), "model.safetensors", self.state_dict())

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, map_location: str = "cpu") -> CifAsrModel:
        model_dir = Path(model_dir)
        config = CifAsrConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
        model = cls(config)
        model.load_state_dict(load_weights(model_dir, map_location=map_location))
        return model.eval()
