"""The image stage's model: the image interface (encoder + Q-Former + I-Adapter) before a frozen LLM,
with its training losses (BLIP-2's three): the LLM's caption loss, an image-text contrastive loss
(:class:`CaptionTextEncoder` on the caption side) and image-grounded text generation
(:class:`CaptionDecoder`). ``asr.training.train_image`` trains it; :meth:`ImageCaptionModel.from_pretrained` reads a
``final/`` it wrote (the interface, ``image_stage.json`` and the loss heads beside it).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from asr.config import dataclass_from_dict
from asr.data.batching import IGNORE_ID
from asr.io_utils import load_weights, read_model_config, save_weights, write_text_atomic
from asr.models.frozen_llm import FrozenLlmMixin
from asr.models.image_x2l import ImageX2L, ImageX2LConfig
from asr.models.llm import LlmConfig, LoadedLlm, load_llm
from asr.models.speech_llm import Prompt, PromptConfig, assemble, normalize_spaces, teacher_forced, token_accuracy

log = logging.getLogger(__name__)

KIND = "image_caption"
STAGE_CONFIG_NAME = "image_stage.json"  # beside the interface's image_x2l.json: LLM, prompt, loss settings
ITC_HEAD = "itc_head"  # the contrastive head (<stem>.safetensors; dirs of old: .pt), when the run had that loss
ITG_HEAD = "itg_decoder"  # the ITG caption decoder with its vocabulary, likewise
LOSS_HEADS = {ITC_HEAD: "itc_", ITG_HEAD: "itg_decoder."}  # file stem -> the model's state keys it holds
LOSS_WEIGHTS = {ITC_HEAD: "contrastive_weight", ITG_HEAD: "itg_weight"}  # file stem -> the loss it serves
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
        """From a YAML config's sections ``image_x2l``, ``llm``, ``prompt`` and ``loss`` (the other fields)."""
        loss = dict(cfg.get("loss") or {})
        parts = {"image_x2l": ImageX2LConfig.from_dict(cfg.get("image_x2l")), "llm": LlmConfig.from_dict(cfg.get("llm"))}
        parts["prompt"] = image_prompt_config(cfg.get("prompt"))
        clash = sorted(set(loss) & set(parts))
        if clash:
            raise ValueError(f"loss: {clash} are sections of their own, not loss settings")
        return dataclass_from_dict(cls, {**loss, **parts}, "loss")


# ---- the model ------------------------------------------------------------------
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
        out, labels, _ = teacher_forced(self, list(emb), targets)
        return out, labels

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
        """The interface (``image_x2l.json`` + weights), ``image_stage.json`` (kind ``image_caption``: the
        LLM and prompt it was aligned to, the loss settings) and the loss heads, so that
        :meth:`from_pretrained` gives this model back; a later run (``--init``) continues with the heads."""
        out_dir = Path(out_dir)
        self.x2l.save_pretrained(out_dir)
        stage = {k: v for k, v in asdict(self.config).items() if k != "image_x2l"}
        write_text_atomic(out_dir / STAGE_CONFIG_NAME, json.dumps({"kind": KIND, **stage}, indent=2) + "\n")
        for stem, head in self.loss_head_states().items():
            save_weights(out_dir / f"{stem}.safetensors", head)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, llm_overrides: dict | None = None) -> ImageCaptionModel:
        """A dir :meth:`save_pretrained` wrote: the interface as saved, its LLM loaded and frozen, the loss
        heads and settings back. A loss whose head a dir lacks (runs before heads were kept) is off."""
        model_dir = Path(model_dir)
        d = read_model_config(model_dir / STAGE_CONFIG_NAME, KIND)
        x2l = ImageX2L.from_pretrained(model_dir)
        d["llm"] = LlmConfig.from_dict({**d["llm"], **(llm_overrides or {})})
        d["prompt"] = image_prompt_config(d["prompt"])
        heads = {}
        for stem in LOSS_HEADS:
            try:
                heads[stem] = load_weights(model_dir, stem=stem)
            except FileNotFoundError:
                if d.get(LOSS_WEIGHTS[stem], 0) > 0:
                    log.warning(
                        "%s: no %s weights: its loss (%s) is off in the loaded model", model_dir, stem, LOSS_WEIGHTS[stem]
                    )
                d[LOSS_WEIGHTS[stem]] = 0.0
        config = dataclass_from_dict(ImageStageConfig, {**d, "image_x2l": x2l.config}, f"{model_dir / STAGE_CONFIG_NAME}")
        vocab = heads[ITG_HEAD]["itg_decoder.vocab"].tolist() if ITG_HEAD in heads else None
        model = cls(config, load_llm(config.llm), x2l=x2l, caption_vocab=vocab)
        for stem, state in heads.items():
            model.load_loss_head(state, model_dir / stem)
        return model.eval()

    def load_loss_head(self, state: dict[str, torch.Tensor], where: str | Path) -> None:
        """Load one loss head's tensors (a :meth:`loss_head_states` value); they must fit this model."""
        own = {k for k in self.state_dict() if k.startswith(tuple(LOSS_HEADS.values()))}
        prefix = next((p for p in LOSS_HEADS.values() if all(k.startswith(p) for k in state)), None)
        expected = {k for k in own if prefix and k.startswith(prefix)}
        if not state or set(state) != expected:
            raise ValueError(f"{where}: loss-head tensors do not fit this model ({sorted(set(state) ^ expected)[:5]})")
        self.load_state_dict(state, strict=False)

    def loss_head_states(self) -> dict[str, dict[str, torch.Tensor]]:
        """File stem -> the weights of each loss head this model has (:data:`LOSS_HEADS`): the contrastive
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
