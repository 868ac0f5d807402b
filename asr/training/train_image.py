"""X-LLM image stages 1-2: align the image interface (encoder + Q-Former + I-Adapter) to a frozen LLM.

    python -m asr.training.train_image --config conf/image_quick.yaml \\
        --captions data/captions --valid-captions data/captions_dev --exp-dir exp/image_quick

Per caption (H = the LLM's hidden size, Q = the Q-Former's queries):

    picture (3, H_img, W_img) -> ImageX2L -> (Q, H)
    LLM input: [prompt prefix] <image> [Q image embeddings] </image> [prompt suffix] [caption] <eos>
    loss: the frozen LLM's next-token loss on the caption tokens only (prefix and image positions masked)
          + optionally ``contrastive_weight`` x an image-text contrastive loss (InfoNCE between the
          best-matching projected image position and a vector of the caption: the mean of its frozen
          LLM token embeddings, with ``text_encoder: transformer`` plus those through small transformer
          layers, which see word order; the other captions of the batch are the negatives)
          + optionally ``itg_weight`` x BLIP-2's image-grounded text generation loss: a small decoder
          (:class:`CaptionDecoder`) writes the caption token by token from the image positions alone,
          so which colour goes with which shape and place is in the target (cheap: no LLM forward).

Batches are random captions, or (``batching.hard_negative_share`` > 0) partly groups of captions that
differ from each other in one word ("two red stars on the left" / "two red crosses on the left"):
hard negatives, which the contrastive loss can only tell apart by what the word names in the picture.

Everything of the interface is trained here, the image encoder included (no vision weights ship
offline: the embedded ``small_cnn`` encoder learns from the captions); the LLM stays frozen (LoRA
is refused: this stage aligns the interface to the LLM as it is). ``final/`` holds the interface
with ``freeze_encoder: true`` (later stages load it with a frozen encoder), ``image_stage.json``
(the LLM and prompt it was aligned to), ``itc_head.pt`` (the contrastive head, when the run had that
loss; ``--init`` continues with it), ``itg_decoder.pt`` (the same for the ITG decoder) and ``eval.json``
(greedy captions of the validation pictures scored against their references: WER and exact-match rate).

Config (YAML), sections: ``image_x2l`` (:class:`ImageX2LConfig`: encoder, qformer, adapter),
``llm`` (:class:`LlmConfig`), ``prompt`` (:class:`PromptConfig`; the speech markers become image
markers), ``loss`` (``contrastive_weight``, ``caption_weight``, ``itg_weight``, ``itg_layers``, ``text_encoder``,
``text_layers``, ``swap_negatives``), ``batching`` (:class:`BatchingConfig`),
``train`` (:class:`TrainConfig`; ``max_batch_size`` is the batch size in pictures) and ``eval`` (``num_captions``, ``max_new_tokens``).
Data: a captions dir holds ``images.scp`` (caption id -> PNG path) and ``text`` (caption id ->
caption), Kaldi-style tables sorted by id (``recipes/mini_vis`` stage 0 writes them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import random
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asr.config import dataclass_from_dict, load_config
from asr.data.batching import IGNORE_ID, pad_targets
from asr.data.datadir import DataDirError, read_table
from asr.data.image import read_image
from asr.io_utils import atomic_path, write_text_atomic
from asr.models.frozen_llm import FrozenLlmMixin
from asr.models.image_x2l import ImageX2L, ImageX2LConfig
from asr.models.llm import LlmConfig, LoadedLlm, load_llm
from asr.models.speech_llm import Prompt, PromptConfig, assemble, normalize_spaces, token_accuracy
from asr.training.trainer import TrainConfig, Trainer, publish_final, run_entry_point, seed_everything

log = logging.getLogger(__name__)

STAGE_CONFIG_NAME = "image_stage.json"
ITC_HEAD_NAME = "itc_head.pt"  # the contrastive head, beside the interface when the run had that loss
ITG_HEAD_NAME = "itg_decoder.pt"  # the ITG caption decoder, likewise
LOSS_HEADS = {ITC_HEAD_NAME: "itc_", ITG_HEAD_NAME: "itg_decoder."}  # file -> the model's state keys it holds
SECTIONS = ("image_x2l", "llm", "prompt", "loss", "batching", "train", "eval")
TEXT_ENCODERS = ("mean", "transformer")
ITC_DIM = 256  # the contrastive loss's shared image-text space


def image_prompt_config(d: dict | None = None) -> PromptConfig:
    """The speech prompt's fields, with image defaults (``speech_start/end`` hold the image markers)."""
    base = {
        "instruction": "Describe the picture.",
        "system": "You describe pictures.",
        "speech_start": "<image>",
        "speech_end": "</image>",
    }
    return dataclass_from_dict(PromptConfig, {**base, **(d or {})}, "prompt config")


@dataclass
class ImageStageConfig:
    image_x2l: ImageX2LConfig = field(default_factory=ImageX2LConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    prompt: PromptConfig = field(default_factory=image_prompt_config)
    contrastive_weight: float = 0.0
    caption_weight: float = 1.0  # 0: contrastive pretraining only (no LLM forward: fast), as BLIP-2's first stage
    text_encoder: str = "mean"  # the contrastive loss's caption side: "mean" or "transformer" (CaptionTextEncoder)
    text_layers: int = 2  # transformer layers of text_encoder "transformer"
    swap_negatives: int = 0  # per caption, up to this many extra negatives: two words of one word class exchanged
    itg_weight: float = 0.0  # BLIP-2's image-grounded text generation loss (CaptionDecoder)
    itg_layers: int = 2  # the ITG decoder's transformer layers

    def __post_init__(self):
        weights = (self.caption_weight, self.contrastive_weight, self.itg_weight)
        if min(weights) < 0 or sum(weights) <= 0:
            raise ValueError(
                f"loss weights must be >= 0 and not all 0 (caption_weight {self.caption_weight}, "
                f"contrastive_weight {self.contrastive_weight}, itg_weight {self.itg_weight})"
            )
        if self.itg_layers < 1:
            raise ValueError(f"loss: itg_layers must be >= 1 (got {self.itg_layers})")
        if self.swap_negatives < 0:
            raise ValueError(f"loss: swap_negatives must be >= 0 (got {self.swap_negatives})")
        if self.text_encoder not in TEXT_ENCODERS or self.text_layers < 1:
            raise ValueError(
                f"loss: text_encoder must be one of {list(TEXT_ENCODERS)} and text_layers >= 1 "
                f"(got {self.text_encoder!r}, {self.text_layers})"
            )

    @classmethod
    def from_sections(cls, cfg: dict) -> ImageStageConfig:
        loss = dict(cfg.get("loss") or {})
        known = [
            "caption_weight",
            "contrastive_weight",
            "itg_layers",
            "itg_weight",
            "swap_negatives",
            "text_encoder",
            "text_layers",
        ]
        unknown = set(loss) - set(known)
        if unknown:
            raise ValueError(f"unknown loss key(s) {sorted(unknown)} (known: {known})")
        return cls(
            ImageX2LConfig.from_dict(cfg.get("image_x2l")),
            LlmConfig.from_dict(cfg.get("llm")),
            image_prompt_config(cfg.get("prompt")),
            float(loss.get("contrastive_weight", 0.0)),
            float(loss.get("caption_weight", 1.0)),
            str(loss.get("text_encoder", "mean")),
            int(loss.get("text_layers", 2)),
            int(loss.get("swap_negatives", 0)),
            float(loss.get("itg_weight", 0.0)),
            int(loss.get("itg_layers", 2)),
        )


@dataclass
class BatchingConfig:
    """How training captions are batched (section ``batching``)."""

    hard_negative_share: float = 0.0  # share of a batch's anchor captions that bring one-word neighbours
    group_size: int = 4  # an anchor + up to group_size - 1 captions of other pictures one word away from it

    def __post_init__(self):
        if not 0 <= self.hard_negative_share <= 1 or self.group_size < 2:
            raise ValueError(
                f"batching: hard_negative_share must be in [0, 1] and group_size >= 2 "
                f"(got {self.hard_negative_share}, {self.group_size})"
            )

    @classmethod
    def from_dict(cls, d: dict | None) -> BatchingConfig:
        return dataclass_from_dict(cls, d, "batching config")


def load_image_config(path: str | Path) -> dict:
    """The stage's YAML as a dict of sections; errors name the file."""
    cfg = load_config(path, sections=SECTIONS)
    try:
        ImageStageConfig.from_sections(cfg)  # validate every section now, not after minutes of loading
        BatchingConfig.from_dict(cfg.get("batching"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return cfg


# ---- the model of this stage ------------------------------------------------------------------
class CaptionTextEncoder(nn.Module):
    """The caption side of the contrastive loss with word order (``loss.text_encoder: transformer``).

    The mean of a caption's token embeddings is a bag of words: "two red stars at the top and one blue
    cross on the left" and "two blue stars at the top and one red cross on the left" get the same
    vector, so the contrastive loss cannot teach which colour goes with which shape and place. Here
    the frozen LLM's token embeddings also get positions and pass through small transformer layers;
    their (masked) mean is added to the bag-of-words vector through a zero-initialised projection, so
    training starts where the mean head starts and the layers add what word order says:

        tokens (L, H) each -> pad -> (C, L, H)
        bag:     mean over tokens -> Linear                                   -> (C, D)
        order:   Linear + positions -> layers -> mean over tokens -> Linear_0 -> (C, D)
        vector = bag + order
    """

    def __init__(self, hidden_size: int, dim: int = ITC_DIM, num_layers: int = 2, num_heads: int = 4, max_tokens: int = 128):
        super().__init__()
        self.max_tokens = max_tokens
        self.bag = nn.Linear(hidden_size, dim)
        self.inp = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, dim))  # LLM embeddings are tiny
        self.positions = nn.Embedding(max_tokens, dim)
        nn.init.normal_(self.positions.weight, std=0.02)  # small beside the words: order, not the words, is added
        layer = nn.TransformerEncoderLayer(dim, num_heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        """C captions' token embeddings, (L_c, H) each -> (C, dim)."""
        longest = max(t.shape[0] for t in tokens)
        if longest > self.max_tokens:
            raise ValueError(f"a caption of {longest} tokens is longer than the text encoder's {self.max_tokens}")
        x = nn.utils.rnn.pad_sequence(tokens, batch_first=True)  # (C, L, H), zeros after each caption
        lengths = torch.tensor([t.shape[0] for t in tokens], device=x.device)
        pad = torch.arange(longest, device=x.device)[None, :] >= lengths[:, None]  # (C, L) True = padding
        bag = self.bag(x.sum(1) / lengths[:, None])  # (C, dim)
        h = self.inp(x) + self.positions(torch.arange(longest, device=x.device))[None]
        h = self.norm(self.layers(h, src_key_padding_mask=pad))  # (C, L, dim)
        order = self.out(h.masked_fill(pad[..., None], 0.0).sum(1) / lengths[:, None])  # (C, dim)
        return bag + order


class CaptionDecoder(nn.Module):
    """BLIP-2's image-grounded text generation (ITG, ``loss.itg_weight``): a small transformer decoder
    that writes a caption from the image positions alone, next token by next token.

    The contrastive loss compares one vector per caption; this loss has every word in its place as a
    target, so "two blue stars at the top and one red cross" after a picture of red stars and a blue
    cross costs more than the true caption: the image positions must say which colour, shape and
    place go together. It needs no LLM forward (steps stay as cheap as the contrastive run's). It
    predicts among the tokens of the training captions (``vocab``, LLM token ids, sorted), plus one
    class for any other token:

        image positions (B, Q, H) -> LayerNorm + Linear                       -> memory (B, Q, D)
        caption classes c_1..c_L (eos last); input [bos, c_1..c_{L-1}] -> Embedding + positions -> (B, L, D)
        num_layers x (causal self-attention, cross-attention to memory, MLP) -> LayerNorm -> Linear
                                                                              -> logits (B, L, V_c + 1)
    """

    def __init__(
        self,
        hidden_size: int,
        vocab: list[int],
        dim: int = ITC_DIM,
        num_layers: int = 2,
        num_heads: int = 4,
        max_tokens: int = 128,
    ):
        super().__init__()
        if not vocab or sorted(set(vocab)) != list(vocab):
            raise ValueError("the ITG decoder needs a non-empty sorted vocabulary of distinct token ids")
        self.register_buffer("vocab", torch.tensor(vocab, dtype=torch.long))  # (V_c,)
        self.unk, self.bos, self.max_tokens = len(vocab), len(vocab) + 1, max_tokens
        self.memory = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, dim))
        self.tokens = nn.Embedding(len(vocab) + 2, dim)
        self.positions = nn.Embedding(max_tokens, dim)
        layer = nn.TransformerDecoderLayer(dim, num_heads, 4 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerDecoder(layer, num_layers)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, len(vocab) + 1)

    def classes(self, ids: torch.Tensor) -> torch.Tensor:
        """LLM token ids (any shape) -> class indices; ids outside the vocabulary -> ``unk``."""
        pos = torch.searchsorted(self.vocab, ids).clamp(max=len(self.vocab) - 1)
        return torch.where(self.vocab[pos] == ids, pos, torch.full_like(pos, self.unk))

    def log_probs(self, emb: torch.Tensor, targets: list[list[int]]) -> tuple[torch.Tensor, ...]:
        """emb (B, Q, H), B captions (token ids, eos last) -> log-probabilities (B, L, V_c + 1), gold
        classes (B, L), mask (B, L) True on caption tokens."""
        longest = max(len(t) for t in targets)
        if longest > self.max_tokens:
            raise ValueError(f"a caption of {longest} tokens is longer than the ITG decoder's {self.max_tokens}")
        device = self.vocab.device
        gold = torch.full((len(targets), longest), self.unk, dtype=torch.long, device=device)  # (B, L)
        keep = torch.zeros(len(targets), longest, dtype=torch.bool, device=device)
        for b, t in enumerate(targets):
            gold[b, : len(t)] = self.classes(torch.tensor(t, device=device))
            keep[b, : len(t)] = True
        inputs = torch.cat([gold.new_full((len(targets), 1), self.bos), gold[:, :-1]], dim=1)  # (B, L)
        x = self.tokens(inputs) + self.positions(torch.arange(longest, device=device))[None]
        causal = torch.ones(longest, longest, dtype=torch.bool, device=device).triu(1)  # True: not attended
        h = self.layers(x, self.memory(emb.float()), tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=~keep)  # (B, L, D)
        return self.out(self.norm(h)).log_softmax(-1), gold, keep

    def forward(self, emb: torch.Tensor, targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean next-token loss over the captions' tokens, and the share of tokens predicted right."""
        logp, gold, keep = self.log_probs(emb, targets)
        picked = logp.gather(-1, gold[..., None])[..., 0]  # (B, L)
        loss = -(picked * keep).sum() / keep.sum()
        return loss, (logp.argmax(-1) == gold)[keep].float().mean().detach()

    @torch.no_grad()
    def log_likelihood(self, emb: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """(B,) log P(caption b | picture b), summed over its tokens."""
        logp, gold, keep = self.log_probs(emb, targets)
        return (logp.gather(-1, gold[..., None])[..., 0] * keep).sum(1)


class ImageCaptionModel(FrozenLlmMixin, nn.Module):
    """Trainable ImageX2L (+ contrastive head, + ITG decoder) in front of a frozen LLM; forward gives the losses.

    ``caption_vocab``: the LLM token ids of the training captions, sorted (the ITG decoder predicts among
    them; required when ``config.itg_weight`` > 0)."""

    def __init__(
        self, config: ImageStageConfig, llm: LoadedLlm, x2l: ImageX2L | None = None, caption_vocab: list[int] | None = None
    ):
        super().__init__()
        if config.llm.lora.enabled or any(p.requires_grad for p in llm.model.parameters()):
            raise ValueError(
                "the image stage trains the interface against a frozen LLM: set llm.freeze: true and leave llm.lora off"
            )
        self.config = config
        self.llm = llm.model
        self.tokenizer = llm.tokenizer
        self.prompt = Prompt(llm.tokenizer, config.prompt)
        self.x2l = x2l if x2l is not None else ImageX2L(config.image_x2l, llm.hidden_size)
        if self.x2l.config.llm_hidden_size != llm.hidden_size:
            raise ValueError(
                f"image interface outputs {self.x2l.config.llm_hidden_size}-d vectors, "
                f"the LLM {config.llm.name_or_path!r} needs {llm.hidden_size}"
            )
        self.config = dataclasses.replace(config, image_x2l=self.x2l.config)
        if config.contrastive_weight > 0:
            self.itc_proj = nn.Linear(llm.hidden_size, ITC_DIM)  # per image position
            if config.text_encoder == "mean":
                self.itc_text_proj = nn.Linear(llm.hidden_size, ITC_DIM)  # mean frozen LLM embedding of the caption
            else:
                self.itc_text_encoder = CaptionTextEncoder(llm.hidden_size, ITC_DIM, config.text_layers)
            self.itc_log_scale = nn.Parameter(torch.tensor(float(np.log(10.0))))
        if config.itg_weight > 0:
            if not caption_vocab:
                raise ValueError("loss.itg_weight > 0 needs the training captions' token ids (caption_vocab)")
            self.itg_decoder = CaptionDecoder(llm.hidden_size, caption_vocab, ITC_DIM, config.itg_layers)
        self.device = next(self.llm.parameters()).device
        self.init_frozen_llm()
        self.x2l.to(self.device)
        for name in ("itc_proj", "itc_text_proj", "itc_text_encoder", "itc_log_scale", "itg_decoder"):
            if hasattr(self, name):
                getattr(self, name).to(self.device)

    def train(self, mode: bool = True):
        super().train(mode)
        self.llm.eval()  # frozen: no dropout
        return self

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained tensors, and the ITG decoder's vocabulary (a buffer: its classes mean these token ids)."""
        state = super().trainable_state_dict()
        if hasattr(self, "itg_decoder"):
            state["itg_decoder.vocab"] = self.itg_decoder.vocab
        return state

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, Q, H) in the LLM's dtype."""
        dtype = self.llm.get_input_embeddings().weight.dtype
        return self.x2l(images.to(self.device)).to(dtype)

    def forward(
        self,
        images: torch.Tensor,
        target_ids: torch.Tensor,
        target_lengths: torch.Tensor,
        picture_ids: torch.Tensor | None = None,
        negative_ids: torch.Tensor | None = None,
        negative_lengths: torch.Tensor | None = None,
    ) -> dict:
        """images (B, 3, H, W) in [0, 1]; target_ids (B, L) caption token ids + eos, padded with IGNORE_ID;
        picture_ids (B,): which captions share a picture (the contrastive loss does not count another
        caption of the same picture as a negative); negative_ids (N, L'), negative_lengths (N,): extra
        captions that describe none of the pictures (swap negatives, see :class:`CaptionSet`)."""
        emb = self.image_embeddings(images)  # (B, Q, H)
        targets = [target_ids[b, : int(target_lengths[b])].tolist() for b in range(target_ids.shape[0])]
        negatives = None
        if negative_ids is not None and negative_lengths is not None:
            negatives = [negative_ids[n, : int(negative_lengths[n])].tolist() for n in range(negative_ids.shape[0])]
        result: dict[str, torch.Tensor] = {}
        loss = emb.new_zeros(())
        if self.config.caption_weight > 0:
            lm_loss, acc = self.caption_loss(emb, targets)
            loss = loss + self.config.caption_weight * lm_loss
            result.update(lm_loss=lm_loss.detach(), acc=acc)
        if self.config.contrastive_weight > 0 and emb.shape[0] > 1:
            itc, itc_acc = self.contrastive_loss(emb, targets, picture_ids, negatives)
            loss = loss + self.config.contrastive_weight * itc
            result.update(itc_loss=itc.detach(), itc_acc=itc_acc)
            if self.config.caption_weight == 0:
                result["acc"] = itc_acc
        if self.config.itg_weight > 0:
            itg, itg_acc = self.itg_decoder(emb, targets)
            loss = loss + self.config.itg_weight * itg
            result.update(itg_loss=itg.detach(), itg_acc=itg_acc)
            if "acc" not in result:
                result["acc"] = itg_acc
        return {"loss": loss, **result}

    def caption_loss(self, emb: torch.Tensor, targets: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen LLM's next-token loss on the captions after the image positions, and its token accuracy."""
        out, labels = self._caption_forward(emb, targets)
        return out.loss, token_accuracy(out.logits, labels)

    @torch.no_grad()
    def caption_log_likelihood(self, emb: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """(B,) log P(caption b | picture b) under the frozen LLM (summed over the caption's tokens)."""
        out, labels = self._caption_forward(emb, targets)
        logp = out.logits[:, :-1].float().log_softmax(-1)  # (B, S-1, V)
        gold = labels[:, 1:]
        keep = gold != IGNORE_ID
        picked = logp.gather(-1, gold.clamp(min=0)[..., None])[..., 0]  # (B, S-1)
        return (picked * keep).sum(1)

    def _caption_forward(self, emb: torch.Tensor, targets: list[list[int]]):
        embed = self.llm.get_input_embeddings()
        cache = self.prefix_cache(emb.shape[0])
        batch = assemble(embed, self.prompt, list(emb), targets, left_pad=False, with_prefix=cache is None)
        mask = batch.attention_mask
        if cache is not None:  # the prompt prefix is the same for every picture: its keys/values are cached
            mask = torch.cat([mask.new_ones(mask.shape[0], len(self.prompt.prefix)), mask], dim=1)
        out = self.llm(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=mask,
            position_ids=batch.position_ids,
            labels=batch.labels,
            use_cache=cache is not None,
            **self.cache_kwargs(cache),
        )
        return out, batch.labels

    def caption_vectors(self, targets: list[list[int]]) -> torch.Tensor:
        """Captions (token ids, eos last) -> (C, ITC_DIM) unit vectors of the contrastive space."""
        embed = self.llm.get_input_embeddings()
        with torch.no_grad():  # the LLM's embedding table is frozen
            tokens = [embed(torch.tensor(t[:-1] or t, device=self.device)).float() for t in targets]  # (L_c, H) each
        if hasattr(self, "itc_text_encoder"):
            return F.normalize(self.itc_text_encoder(tokens), dim=-1)
        return F.normalize(self.itc_text_proj(torch.stack([t.mean(0) for t in tokens])), dim=-1)

    def similarity(self, emb: torch.Tensor, targets: list[list[int]]) -> torch.Tensor:
        """(B, Q, H) image positions x C captions -> (B, C): the best match over a picture's projected
        positions with a caption's vector."""
        img = F.normalize(self.itc_proj(emb.float()), dim=-1)  # (B, Q, ITC_DIM)
        txt = self.caption_vectors(targets)  # (C, ITC_DIM)
        return torch.einsum("bqd,cd->bcq", img, txt).amax(-1)  # (B images, C captions)

    def contrastive_loss(
        self,
        emb: torch.Tensor,
        targets: list[list[int]],
        picture_ids: torch.Tensor | None = None,
        negatives: list[list[int]] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetric InfoNCE over the batch (BLIP-2's ITC), on :meth:`similarity`. Pairs of a picture and
        another caption of the same picture (``picture_ids`` equal) or a caption with the same words as its
        own (another picture of the same scene) are left out: neither positive nor negative. ``negatives``
        (captions of no picture of the batch) join the picture -> caption direction as extra columns; one
        with the words of a batch caption is dropped. Returns (loss, share of pictures whose own caption
        scores highest among the batch's captions)."""
        scale = self.itc_log_scale.exp().clamp(max=100)
        logits = self.similarity(emb, targets) * scale  # (B, B)
        labels = torch.arange(len(targets), device=self.device)
        keys = [tuple(t) for t in targets]
        same = torch.tensor([[a == b for b in keys] for a in keys], device=self.device)  # same caption text
        if picture_ids is not None:
            picture_ids = picture_ids.to(self.device)
            same |= picture_ids[:, None] == picture_ids[None, :]
        same &= labels[:, None] != labels[None, :]
        logits = logits.masked_fill(same, float("-inf"))
        to_text = logits
        batch_texts = set(keys)
        extra = [n for n in (negatives or []) if tuple(n) not in batch_texts]
        if extra:
            to_text = torch.cat([logits, self.similarity(emb, extra) * scale], dim=1)  # (B, B + N)
        loss = 0.5 * (F.cross_entropy(to_text, labels) + F.cross_entropy(logits.T, labels))
        return loss, (logits.argmax(1) == labels).float().mean().detach()

    @torch.no_grad()
    def generate(self, images: torch.Tensor, max_new_tokens: int = 32, num_beams: int = 1) -> list[str]:
        """Greedy (or beam) captions of a batch of pictures."""
        emb = self.image_embeddings(images)
        batch = assemble(self.llm.get_input_embeddings(), self.prompt, list(emb), None, left_pad=True)
        out = self.llm.generate(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.prompt.eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        texts = []
        for row in out.tolist():
            if self.prompt.eos_id in row:
                row = row[: row.index(self.prompt.eos_id)]
            texts.append(normalize_spaces(self.tokenizer.decode(row, skip_special_tokens=True)))
        return texts

    def save_pretrained(self, out_dir: str | Path) -> None:
        """The interface (``image_x2l.json`` + ``image_x2l.pt``) and the LLM + prompt it was aligned to."""
        out_dir = Path(out_dir)
        self.x2l.save_pretrained(out_dir)
        stage = {
            "llm": asdict(self.config.llm),
            "prompt": asdict(self.config.prompt),
            "contrastive_weight": self.config.contrastive_weight,
            "caption_weight": self.config.caption_weight,
            "text_encoder": self.config.text_encoder,
            "text_layers": self.config.text_layers,
            "itg_weight": self.config.itg_weight,
            "itg_layers": self.config.itg_layers,
        }
        write_text_atomic(out_dir / STAGE_CONFIG_NAME, json.dumps(stage, indent=2) + "\n")
        # a later run (--init) continues with the loss heads; local/itc_binding.py-style scoring reads them
        for name, head in self.loss_head_states().items():
            with atomic_path(out_dir / name) as tmp:
                torch.save(head, tmp)

    def loss_head_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """File name -> the weights of each loss head this model has (:data:`LOSS_HEADS`): the contrastive
        head (image and caption projections, temperature), the ITG decoder with its vocabulary."""
        state = self.state_dict()
        heads = {
            name: {k: v.detach().cpu() for k, v in state.items() if k.startswith(prefix)} for name, prefix in LOSS_HEADS.items()
        }
        return {name: head for name, head in heads.items() if head}

    def pair_scores(self, emb: torch.Tensor, targets: list[list[int]], scorer: str) -> torch.Tensor:
        """(B,) how well caption b fits picture b: "itc" the contrastive similarity, "lm" the frozen LLM's
        caption log-likelihood, "itg" the ITG decoder's."""
        if scorer == "itc":
            return self.similarity(emb, targets).diagonal()
        if scorer == "lm":
            return self.caption_log_likelihood(emb, targets)
        if scorer == "itg":
            return self.itg_decoder.log_likelihood(emb, targets)
        raise ValueError(f"scorer must be itc, lm or itg, not {scorer!r}")


def load_image_stage(model_dir: str | Path, llm_overrides: dict | None = None) -> ImageCaptionModel:
    """A ``final/`` of this stage -> ImageCaptionModel (interface as saved, its LLM loaded and frozen)."""
    model_dir = Path(model_dir)
    stage_file = model_dir / STAGE_CONFIG_NAME
    if not stage_file.is_file():
        raise FileNotFoundError(f"{stage_file} is missing: not an image-stage model dir")
    d = json.loads(stage_file.read_text(encoding="utf-8"))
    x2l = ImageX2L.from_pretrained(model_dir)
    config = ImageStageConfig(
        x2l.config, LlmConfig.from_dict({**d["llm"], **(llm_overrides or {})}), PromptConfig(**d["prompt"]), 0.0
    )
    return ImageCaptionModel(config, load_llm(config.llm), x2l=x2l).eval()


# ---- data -------------------------------------------------------------------------------------
class CaptionSet:
    """A captions dir in memory: every distinct picture once (uint8), captions as LLM target ids."""

    def __init__(
        self, captions_dir: str | Path, prompt: Prompt, swap_negatives: int = 0, size: int | tuple[int, int] | None = None
    ):
        """``swap_negatives`` > 0: the dir's ``word_classes`` table (class name -> its words, e.g.
        ``colour red green blue``) makes, per caption, up to that many captions with two different words
        of one class exchanged ("two red stars and one blue cross" -> "two blue stars and one red
        cross"): the same words in another binding, negatives that only the picture tells apart
        (NegCLIP's word-order negatives); :meth:`collate` adds them as ``negative_ids``. ``size``: pictures
        are resized to it where they differ (the image encoder's :meth:`ImageX2L.picture_size`)."""
        captions_dir = Path(captions_dir)
        try:
            scp = read_table(captions_dir / "images.scp")
            text = read_table(captions_dir / "text")
        except DataDirError as exc:
            raise ValueError(f"captions dir {captions_dir}: {exc}") from None
        missing = [k for k in scp if k not in text]
        if missing or len(text) != len(scp):
            raise ValueError(
                f"captions dir {captions_dir}: images.scp and text name different ids "
                f"(e.g. {(missing or sorted(set(text) - set(scp)))[0]!r})"
            )
        self.ids = list(scp)
        paths = sorted(set(scp.values()))
        index = {p: i for i, p in enumerate(paths)}
        arrays = []
        for p in paths:
            try:
                arrays.append(read_image(p, size))
            except (OSError, ValueError) as exc:
                line = next(n for n, v in enumerate(scp.values(), 1) if v == p)
                raise ValueError(f"{captions_dir / 'images.scp'}:{line}: cannot read picture {p}: {exc}") from None
            if arrays[-1].shape != arrays[0].shape:
                raise ValueError(
                    f"{captions_dir / 'images.scp'}: picture {p} is {arrays[-1].shape[1:]}, "
                    f"{paths[0]} is {arrays[0].shape[1:]}: all pictures must have one size"
                )
        self.images = torch.from_numpy(np.stack(arrays))  # (P, 3, H, W) uint8
        self.image_of = [index[scp[k]] for k in self.ids]
        self.texts = [text[k] for k in self.ids]
        self.targets = [prompt.target_ids(t) for t in self.texts]
        self.negatives: list[list[list[int]]] = []
        if swap_negatives > 0:
            classes_file = captions_dir / "word_classes"
            if not classes_file.is_file():
                raise ValueError(
                    f"captions dir {captions_dir}: loss.swap_negatives needs {classes_file} (lines '<class> <word> <word> ...')"
                )
            classes = [set(words.split()) for words in read_table(classes_file).values()]
            self.negatives = [[prompt.target_ids(v) for v in swapped_captions(t, classes)[:swap_negatives]] for t in self.texts]

    def __len__(self) -> int:
        return len(self.ids)

    def pictures(self, indices: list[int]) -> torch.Tensor:
        return self.images[[self.image_of[i] for i in indices]].float() / 255.0  # (B, 3, H, W)

    def collate(self, indices: list[int]) -> dict:
        batch = {
            "utt_ids": [self.ids[i] for i in indices],
            "images": self.pictures(indices),
            "picture_ids": torch.tensor([self.image_of[i] for i in indices]),
            **pad_targets([self.targets[i] for i in indices]),
        }
        negatives = [n for i in indices for n in self.negatives[i]] if self.negatives else []
        if negatives:
            padded = pad_targets(negatives)
            batch.update(negative_ids=padded["target_ids"], negative_lengths=padded["target_lengths"])
        return batch


def swapped_captions(text: str, classes: list[set[str]]) -> list[str]:
    """``text`` with two different words of one class exchanged, every such pair (class by class, left to
    right; each distinct result once, never ``text`` itself)."""
    words = text.split()
    out: dict[str, None] = {}
    for vocab in classes:
        where = [i for i, w in enumerate(words) if w in vocab]
        for a, i in enumerate(where):
            for j in where[a + 1 :]:
                if words[i] != words[j]:
                    new = list(words)
                    new[i], new[j] = new[j], new[i]
                    out.setdefault(" ".join(new))
    out.pop(text, None)
    return list(out)


class FixedBatchSampler:
    """Batches of ``batch_size`` captions (the Trainer's sampler interface), reshuffled every epoch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0):
        if n == 0:
            raise ValueError("no captions to batch")
        self.n, self.batch_size, self.shuffle, self.seed, self.epoch = n, max(1, batch_size), shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[list[int]]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        return [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        return iter(self.epoch_order())


class OneWordNeighbours:
    """Which captions differ from a given one in exactly one word (same length, one word replaced).

    Such a caption of another picture is a hard negative for the contrastive loss: in a random batch a
    caption is told from the others by any of its words (colour and position usually suffice); next to
    "two red stars on the left", "two red crosses on the left" is told apart only by the shapes.
    Captions are bucketed by (length, position, the words around it); a bucket holds one caption's
    neighbours at that position (and captions with its own text, which :meth:`pick` skips).
    """

    def __init__(self, texts: list[str], image_of: list[int]):
        self.texts, self.image_of = texts, image_of
        bucket_ids: dict[tuple, int] = {}
        self.members: list[list[int]] = []
        self.buckets: list[list[int]] = []  # caption -> its buckets
        for i, text in enumerate(texts):
            words = text.split()
            mine = []
            for j in range(len(words)):
                key = (len(words), j, " ".join(words[:j]), " ".join(words[j + 1 :]))
                b = bucket_ids.setdefault(key, len(bucket_ids))
                if b == len(self.members):
                    self.members.append([])
                self.members[b].append(i)
                mine.append(b)
            self.buckets.append(mine)

    def pick(
        self, i: int, rng: random.Random, taken_texts: set[str], taken_pictures: set[int], free: bytearray, tries: int = 8
    ) -> int | None:
        """A free caption one word away from caption ``i``, of a picture and with a text not taken yet."""
        buckets = [b for b in self.buckets[i] if len(self.members[b]) > 1]
        rng.shuffle(buckets)
        for b in buckets:
            members = self.members[b]
            for _ in range(tries):
                j = members[rng.randrange(len(members))]
                if free[j] and self.texts[j] not in taken_texts and self.image_of[j] not in taken_pictures:
                    return j
        return None


class HardNegativeBatchSampler(FixedBatchSampler):
    """Batches of ``batch_size`` captions in which a share of the anchors come with one-word neighbours.

    Every epoch: the captions in shuffled order are anchors; with probability ``share`` an anchor
    brings up to ``group_size - 1`` free captions of other pictures that differ from it in one word
    (:class:`OneWordNeighbours`); groups fill the batches in order. Each caption is used once per epoch,
    as with :class:`FixedBatchSampler`.
    """

    def __init__(
        self,
        texts: list[str],
        image_of: list[int],
        batch_size: int,
        share: float,
        group_size: int = 4,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(len(texts), batch_size, shuffle, seed)
        self.neighbours = OneWordNeighbours(texts, image_of)
        self.share, self.group_size = share, group_size
        self._cached: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.epoch_order())

    def epoch_order(self) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = random.Random(self.seed + self.epoch)
        order = list(range(self.n))
        if self.shuffle:
            rng.shuffle(order)
        free = bytearray(b"\x01") * self.n
        texts, image_of = self.neighbours.texts, self.neighbours.image_of
        batches, batch = [], []
        for a in order:
            if not free[a]:
                continue
            free[a] = 0
            group = [a]
            if rng.random() < self.share:
                taken_texts, taken_pictures = {texts[a]}, {image_of[a]}
                while len(group) < min(self.group_size, self.batch_size - len(batch)):
                    j = self.neighbours.pick(a, rng, taken_texts, taken_pictures, free)
                    if j is None:
                        break
                    free[j] = 0
                    group.append(j)
                    taken_texts.add(texts[j])
                    taken_pictures.add(image_of[j])
            batch += group
            if len(batch) >= self.batch_size:
                batches.append(batch)
                batch = []
        if batch:
            batches.append(batch)
        self._cached = (self.epoch, batches)
        return batches


def make_sampler(
    data: CaptionSet, batch_size: int, batching: BatchingConfig, shuffle: bool = True, seed: int = 0
) -> FixedBatchSampler:
    if batching.hard_negative_share > 0:
        return HardNegativeBatchSampler(
            data.texts, data.image_of, batch_size, batching.hard_negative_share, batching.group_size, shuffle=shuffle, seed=seed
        )
    return FixedBatchSampler(len(data), batch_size, shuffle=shuffle, seed=seed)


# ---- evaluation and training ------------------------------------------------------------------
def evaluate_captions(model: ImageCaptionModel, data: CaptionSet, num: int, max_new_tokens: int, batch_size: int = 16) -> dict:
    """Scores on the first caption of each of the first ``num`` distinct pictures.

    Caption training (``caption_weight`` > 0): greedy captions (WER against the closest of the picture's
    captions, exact
    matches) and the teacher-forced caption loss with the true picture and with another picture of the
    batch (the gap says how much the LLM reads the image positions). Contrastive training: the share
    of pictures whose own caption scores highest among the batch's (``itc_top1``, chance 1/batch), and the
    same over all validation captions batched in groups of one-word neighbours (``itc_top1_hard``: the
    colour, shape, count or position word decides; ``itc_hard_captions``: how many captions had such
    a neighbour in their batch) and, with swap negatives, how often a picture prefers its caption to the
    caption with two words exchanged (``itc_swap_wins``, :func:`swap_retrieval`). With the ITG loss: its
    loss with the true picture and with another (``itg_loss``, ``itg_loss_other_picture``). The caption run adds, when
    the validation captions dir has ``word_classes``, the same check with the LLM's caption likelihood
    (``lm_swap_wins``).
    """
    import jiwer

    model.eval()
    first: dict[int, int] = {}
    for i, img in enumerate(data.image_of):
        first.setdefault(img, i)
    idx = sorted(first.values())[:num]
    hyps, loss_sum, other_sum, other_n, top1_sum, top1_n = [], 0.0, 0.0, 0, 0.0, 0
    itg_sum, itg_other_sum, itg_other_n = 0.0, 0.0, 0
    for i in range(0, len(idx), batch_size):
        chunk = idx[i : i + batch_size]
        batch = data.collate(chunk)
        images = batch["images"].to(model.device)
        targets = [batch["target_ids"][b, : int(batch["target_lengths"][b])].tolist() for b in range(len(chunk))]
        with torch.no_grad():
            emb = model.image_embeddings(images)
            if model.config.caption_weight > 0:
                loss_sum += float(model.caption_loss(emb, targets)[0]) * len(chunk)
                if len(chunk) > 1:  # control: every caption after the next caption's (different) picture
                    other_sum += float(model.caption_loss(emb.roll(1, dims=0), targets)[0]) * len(chunk)
                    other_n += len(chunk)
            if model.config.itg_weight > 0:
                itg_sum += float(model.itg_decoder(emb, targets)[0]) * len(chunk)
                if len(chunk) > 1:
                    itg_other_sum += float(model.itg_decoder(emb.roll(1, dims=0), targets)[0]) * len(chunk)
                    itg_other_n += len(chunk)
            if model.config.contrastive_weight > 0 and len(chunk) > 1:
                top1_sum += float(model.contrastive_loss(emb, targets, batch["picture_ids"])[1]) * len(chunk)
                top1_n += len(chunk)
        if model.config.caption_weight > 0:
            hyps += model.generate(images, max_new_tokens=max_new_tokens)
    scores: dict = {"pictures": len(idx)}
    if top1_n:
        scores.update(itc_top1=round(top1_sum / top1_n, 4), itc_chance=round(1 / min(batch_size, len(idx)), 4))
        scores.update(hard_retrieval(model, data, batch_size))
        scores.update(swap_retrieval(model, data))
    if model.config.itg_weight > 0:
        scores.update(
            itg_loss=round(itg_sum / max(1, len(idx)), 4),
            itg_loss_other_picture=round(itg_other_sum / itg_other_n, 4) if itg_other_n else None,
        )
    if model.config.caption_weight > 0:
        # a picture's captions are all right answers (the styles order the words differently): each
        # greedy caption is scored against the closest of them
        captions_of: dict[int, list[str]] = {}
        for i, img in enumerate(data.image_of):
            captions_of.setdefault(img, []).append(data.texts[i])
        refs, errors, words = [], 0, 0
        for i, hyp in zip(idx, hyps):
            best = min(
                ((jiwer.process_words(r, hyp or "<empty>"), r) for r in captions_of[data.image_of[i]]),
                key=lambda o: (o[0].substitutions + o[0].deletions + o[0].insertions) / len(o[1].split()),
            )
            out, ref = best
            errors += out.substitutions + out.deletions + out.insertions
            words += len(ref.split())
            refs.append(ref)
        wer = errors / words if words else float("nan")
        scores.update(
            lm_loss=round(loss_sum / max(1, len(idx)), 4),
            lm_loss_other_picture=round(other_sum / other_n, 4) if other_n else None,
            wer=round(float(wer), 4),
            exact_match=round(sum(h == r for h, r in zip(hyps, refs)) / max(1, len(refs)), 4),
            examples=[{"id": data.ids[i], "ref": r, "hyp": h} for i, r, h in list(zip(idx, refs, hyps))[:10]],
        )
    return scores


@torch.no_grad()
def hard_retrieval(model: ImageCaptionModel, data: CaptionSet, batch_size: int = 16) -> dict:
    """Contrastive retrieval over every caption of ``data`` in batches of one-word-neighbour groups."""
    sampler = HardNegativeBatchSampler(data.texts, data.image_of, batch_size, share=1.0, group_size=4, shuffle=True)
    hits = n = grouped = 0
    for chunk in sampler.epoch_order():
        if len(chunk) < 2:
            continue
        batch = data.collate(chunk)
        targets = [batch["target_ids"][b, : int(batch["target_lengths"][b])].tolist() for b in range(len(chunk))]
        emb = model.image_embeddings(batch["images"].to(model.device))
        hits += float(model.contrastive_loss(emb, targets, batch["picture_ids"])[1]) * len(chunk)
        n += len(chunk)
        words = [data.texts[i].split() for i in chunk]
        grouped += sum(
            any(
                j != k and len(words[j]) == len(words[k]) and sum(a != b for a, b in zip(words[j], words[k])) == 1
                for k in range(len(chunk))
            )
            for j in range(len(chunk))
        )
    return {"itc_top1_hard": round(hits / n, 4), "itc_hard_captions": grouped} if n else {}


@torch.no_grad()
def swap_retrieval(
    model: ImageCaptionModel, data: CaptionSet, num: int = 1000, batch_size: int = 32, scorer: str = "itc"
) -> dict:
    """Over the first ``num`` captions that have swap negatives: the share of (picture, swapped caption)
    pairs where the picture's true caption scores higher, ties half (chance 0.5). ``scorer`` "itc": the
    contrastive similarity (``itc_swap_wins``; a bag-of-words caption vector scores exactly 0.5, it cannot
    tell the two apart); "lm": the frozen LLM's log-likelihood of the caption after the picture
    (``lm_swap_wins``: does the caption model read which colour, shape and count go where?); "itg": the
    ITG decoder's log-likelihood (``itg_swap_wins``)."""
    with_swaps = [i for i in range(len(data)) if data.negatives and data.negatives[i]][:num]
    rows = [(i, n) for i in with_swaps for n in data.negatives[i]]
    wins = 0.0
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        emb = model.image_embeddings(data.pictures([i for i, _ in chunk]).to(model.device))
        true_ids, fake_ids = [data.targets[i] for i, _ in chunk], [n for _, n in chunk]
        true, fake = model.pair_scores(emb, true_ids, scorer), model.pair_scores(emb, fake_ids, scorer)
        wins += float((true > fake).float().sum() + 0.5 * (true == fake).float().sum())
    return {f"{scorer}_swap_wins": round(wins / len(rows), 4), f"{scorer}_swap_pairs": len(rows)} if rows else {}


def init_interface(model: ImageCaptionModel, init_dir: str | Path) -> None:
    """Start from the interface of an earlier run (e.g. contrastive pretraining): same architecture required."""
    init = ImageX2L.from_pretrained(init_dir, freeze_encoder=False)
    mine, theirs = asdict(model.x2l.config), asdict(init.config)
    for key in ("encoder", "qformer", "adapter", "llm_hidden_size"):
        if mine[key] != theirs[key]:
            raise ValueError(f"--init {init_dir}: its {key} ({theirs[key]}) differs from this config's ({mine[key]})")
    model.x2l.load_state_dict(init.state_dict(), strict=False)  # a frozen hf encoder is reloaded from its source
    log.info("image interface initialised from %s", init_dir)
    for name, mine_head in model.loss_head_states().items():  # the loss heads, where the earlier run's fit
        head_file = Path(init_dir) / name
        if not head_file.is_file():
            continue
        theirs = torch.load(head_file, map_location="cpu", weights_only=True)
        same_shapes = {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in mine_head.items()}
        # integer tensors (the ITG vocabulary) say what the weights mean: they must be equal too
        if same_shapes and all(torch.equal(theirs[k], v) for k, v in mine_head.items() if not v.is_floating_point()):
            model.load_state_dict(theirs, strict=False)
            log.info("loss head initialised from %s", head_file)
        else:
            log.info(
                "loss head %s is another architecture or vocabulary (loss config, captions): this run's starts fresh", head_file
            )


def train(
    config_path: str | Path,
    captions: str | Path,
    valid_captions: str | Path | None,
    exp_dir: str | Path,
    overrides: dict | None = None,
    init: str | Path | None = None,
) -> Path:
    """Train the image interface on a captions dir; returns ``exp_dir/final`` (rerun = resume).

    ``init``: an earlier image-stage model dir whose interface weights this run starts from (a resumed
    run takes its own checkpoint instead)."""
    cfg = load_image_config(config_path)
    stage_cfg = ImageStageConfig.from_sections(cfg)
    train_cfg = TrainConfig.from_dict({**(cfg.get("train") or {}), **(overrides or {})})
    eval_cfg = {"num_captions": 200, "max_new_tokens": 40, **(cfg.get("eval") or {})}
    exp_dir = Path(exp_dir)
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    seed_everything(train_cfg.seed)
    llm = load_llm(stage_cfg.llm)
    swaps = stage_cfg.swap_negatives if stage_cfg.contrastive_weight > 0 else 0
    x2l = ImageX2L(stage_cfg.image_x2l, llm.hidden_size)
    size = x2l.picture_size()  # pictures of another size are resized to the encoder's
    data = CaptionSet(captions, Prompt(llm.tokenizer, stage_cfg.prompt), swaps, size)
    vocab = sorted({t for target in data.targets for t in target}) if stage_cfg.itg_weight > 0 else None
    model = ImageCaptionModel(stage_cfg, llm, x2l=x2l, caption_vocab=vocab)
    if init is not None:
        init_interface(model, init)
    batching = BatchingConfig.from_dict(cfg.get("batching"))
    sampler = make_sampler(data, train_cfg.max_batch_size, batching, shuffle=True, seed=train_cfg.seed)
    valid_fn, valid = None, None
    if valid_captions is not None:
        valid = CaptionSet(valid_captions, model.prompt, swaps, size)
        valid_sampler = make_sampler(valid, train_cfg.max_batch_size, batching, shuffle=False)
        valid_fn = lambda: (valid.collate(b) for b in valid_sampler)  # noqa: E731
    trainable = [p for p in model.parameters() if p.requires_grad]
    log.info(
        "image stage: %.2fM trainable parameters (encoder %s%s, Q-Former %d queries, %s I-Adapter), LLM %s frozen; "
        "%d captions of %d pictures in %d batches",
        sum(p.numel() for p in trainable) / 1e6,
        stage_cfg.image_x2l.encoder.type,
        " frozen" if stage_cfg.image_x2l.freeze_encoder else "",
        stage_cfg.image_x2l.qformer.num_queries,
        stage_cfg.image_x2l.adapter.type,
        stage_cfg.llm.name_or_path,
        len(data),
        data.images.shape[0],
        len(sampler),
    )
    Trainer(
        model,
        sampler,
        data.collate,
        train_cfg,
        exp_dir,
        valid_batches=valid_fn,
        trainable=trainable,
        started_from={"--init model": init},
    ).train()

    def finalize(d: Path) -> None:
        cfg_file = d / "image_x2l.json"
        x2l_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
        x2l_cfg["freeze_encoder"] = True  # later stages use the encoder as trained here, frozen
        write_text_atomic(cfg_file, json.dumps(x2l_cfg, indent=2) + "\n")
        if valid is not None and int(eval_cfg["num_captions"]) > 0:
            best = ImageX2L.from_pretrained(d)
            model.x2l.load_state_dict(best.state_dict())
            for head_file in (d / name for name in LOSS_HEADS):  # the loss heads of the same checkpoint
                if head_file.is_file():
                    model.load_state_dict(torch.load(head_file, map_location="cpu", weights_only=True), strict=False)
            scores = evaluate_captions(model, valid, int(eval_cfg["num_captions"]), int(eval_cfg["max_new_tokens"]))
            if (Path(valid_captions) / "word_classes").is_file():  # binding checks by likelihood
                swapped = CaptionSet(valid_captions, model.prompt, swap_negatives=4, size=size)
                for scorer, on in (("lm", stage_cfg.caption_weight > 0), ("itg", stage_cfg.itg_weight > 0)):
                    if on:
                        scores.update(swap_retrieval(model, swapped, num=int(eval_cfg["num_captions"]), scorer=scorer))
            write_text_atomic(d / "eval.json", json.dumps(scores, indent=1) + "\n")
            log.info("validation pictures: %s", {k: v for k, v in scores.items() if k != "examples"})

    return publish_final(exp_dir, model, finalize)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="image-stage YAML (sections image_x2l, llm, prompt, loss, train, eval)")
    ap.add_argument("--captions", required=True, help="captions dir: images.scp + text")
    ap.add_argument("--valid-captions", help="captions dir for validation (best checkpoint, eval.json)")
    ap.add_argument("--exp-dir", required=True, help="output dir (rerun = resume); the model goes to EXP/final")
    ap.add_argument("--max-steps", type=int, help="override train.max_steps")
    ap.add_argument("--init", help="start from the interface in this model dir (e.g. the contrastive run's final/)")
    args = ap.parse_args(argv)
    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else None
    return run_entry_point(lambda: train(args.config, args.captions, args.valid_captions, args.exp_dir, overrides, args.init))


if __name__ == "__main__":
    sys.exit(main())
