"""X-LLM stage 3: speech and an image together in one frozen LLM (image-conditioned ASR).

    feats (B, T, F) -> stage-2 speech path (frozen stage 1 -> S-Adapter)      speech (B, N_i, H)
    images (B, 3, h, w) -> image X2L (frozen encoder -> Q-Former -> I-Adapter) image  (B, Q, H)
    LLM input per example, by kind (H = the LLM's hidden size):
      speech      [stage-2 prompt: ... <speech> speech </speech> ...]                       transcript
      joint       [... <image> image </image> instruction <speech> speech </speech> ...]    transcript
      caption     [image-stage prompt: ... <image> image </image> ...]                      caption
    -> the LLM of stage 2 (its LoRA, if any) -> next-token loss on the answer only.

Stage 3 trains on the three kinds mixed (one kind per batch, ``kind`` 0/1/2), so the model keeps
transcribing without a picture and captioning while it learns to read the picture next to the
speech. What is trained is set in :class:`MultimodalConfig` (X-LLM: encoders and LLM frozen, the
adapters trained): by default the I-Adapter, the Q-Former and the LoRA of stage 2; the S-Adapter
and the image encoder stay frozen. Decoding uses the joint prompt when an image is given, the
stage-2 prompt otherwise (``images=None``), so "no image" is the same model without the picture.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from asr.config import dataclass_from_dict
from asr.io_utils import read_model_config, write_text_atomic
from asr.models.frozen_llm import FrozenLlmMixin
from asr.models.image_x2l import ImageX2L
from asr.models.picture_guidance import PictureGuidance
from asr.models.speech_llm import (
    Prompt,
    PromptConfig,
    SlotPrompt,
    SpeechLlm,
    assemble_slots,
    slot,
    token_accuracy,
    write_stage1_link,
)

KIND = "multimodal"
CONFIG_NAME = "multimodal.json"
SPEECH, JOINT, CAPTION = 0, 1, 2  # batch kinds


@dataclass
class MultimodalConfig:
    instruction: str = "Transcribe this speech faithfully according to the image."
    system: str | None = "You are a speech recognizer."
    image_start: str = "<image>"
    image_end: str = "</image>"
    speech_start: str = "<speech>"
    speech_end: str = "</speech>"
    train_qformer: bool = True  # X-LLM trains the Q-Former with the adapters; the image encoder stays frozen
    train_image_adapter: bool = True
    train_lora: bool = True  # the stage-2 LoRA (if the stage-2 model has one)
    train_speech_adapter: bool = False  # the S-Adapter: False keeps stage 2's speech embeddings as they are
    lora_lr_scale: float = 1.0  # the LoRA's learning rate relative to train.lr: below 1 it drifts less from stage 2,
    #                             whose speech-only prompt shares the LoRA, while the image interface learns at full rate

    def __post_init__(self):
        if self.lora_lr_scale <= 0:
            raise ValueError(f"lora_lr_scale must be > 0 (got {self.lora_lr_scale})")

    @classmethod
    def from_dict(cls, d: dict | None) -> MultimodalConfig:
        return dataclass_from_dict(cls, d or {}, "multimodal config")

    def content(self) -> str:
        """The joint prompt's user turn: the picture, the instruction, then the speech."""
        return (
            f"{self.image_start}{slot('image')}{self.image_end}\n{self.instruction}\n"
            f"{self.speech_start}{slot('speech')}{self.speech_end}"
        )


class MultimodalLlm(FrozenLlmMixin, nn.Module):
    """A stage-2 speech LLM and an image X2L interface feeding the same LLM."""

    def __init__(
        self,
        config: MultimodalConfig,
        speech: SpeechLlm,
        image: ImageX2L,
        caption_prompt: PromptConfig,
        stage1_dir: str | Path | None = None,
    ):
        super().__init__()
        self.stage1_dir = stage1_dir  # written next to the saved speech LLM, so that it loads on its own
        hidden = speech.llm.get_input_embeddings().weight.shape[1]
        if image.config.llm_hidden_size != hidden:
            raise ValueError(
                f"the image interface outputs {image.config.llm_hidden_size}-d vectors; the speech "
                f"LLM's embeddings are {hidden}-d: both must be aligned to the same LLM"
            )
        self.config = config
        self.speech = speech
        self.x2l = image
        self.x2l.freeze_encoder()
        self.llm = speech.llm
        self.tokenizer = speech.tokenizer
        self.device = speech.device
        self.caption_prompt_config = caption_prompt
        self.prompt = speech.prompt  # no image: stage 2's prompt, unchanged
        self.joint_prompt = SlotPrompt(self.tokenizer, config.content(), config.system)
        self.caption_prompt = Prompt(self.tokenizer, caption_prompt)
        self.x2l.to(self.device)
        self._set_trainable()
        self.init_frozen_llm()
        self.cache_prefix = False  # three prompts, and LoRA is usually trained

    def _set_trainable(self) -> None:
        c = self.config
        for p in self.speech.adapter.parameters():
            p.requires_grad_(c.train_speech_adapter)
        for p in self.x2l.qformer.parameters():
            p.requires_grad_(c.train_qformer)
        for p in self.x2l.adapter.parameters():
            p.requires_grad_(c.train_image_adapter)
        for n, p in self.llm.named_parameters():
            p.requires_grad_(c.train_lora and "lora_" in n)
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError(
                "multimodal config trains nothing: turn on one of train_qformer, train_image_adapter, "
                "train_lora, train_speech_adapter"
            )

    def optimizer_groups(self) -> list[dict]:
        """The trainable parameters as optimizer groups: the LoRA's with ``lr_scale`` = lora_lr_scale."""
        lora = [p for n, p in self.llm.named_parameters() if p.requires_grad and "lora_" in n]
        ids = {id(p) for p in lora}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr_scale": 1.0}] if rest else []
        if lora:
            groups.append({"params": lora, "lr_scale": self.config.lora_lr_scale})
        return groups

    def train(self, mode: bool = True):
        super().train(mode)
        self.speech.stage1.eval()
        self.x2l.train(mode)  # keeps the frozen encoder in eval mode
        if not any(p.requires_grad for p in self.llm.parameters()):
            self.llm.eval()
        return self

    # ---- embeddings ----------------------------------------------------------------------------
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) in [0, 1] -> (B, Q, H) in the LLM's dtype."""
        return self.x2l(images.to(self.device)).to(self.llm.get_input_embeddings().weight.dtype)

    def _assemble(self, kind: int, feats, feat_lengths, images, targets, left_pad: bool):
        if kind == CAPTION:
            img = self.image_embeddings(images)
            embed = self.llm.get_input_embeddings()
            return assemble_slots(embed, self.caption_prompt, [{"speech": x} for x in img], targets, left_pad), None
        speech, rec = self.speech.speech_embeddings(feats, feat_lengths)  # list of (N_i, H)
        if kind == SPEECH:
            return self._speech_batch(speech, targets, left_pad), rec
        return self._joint_batch(self.image_embeddings(images), speech, targets, left_pad), rec

    def _speech_batch(self, speech: list[torch.Tensor], targets, left_pad: bool):
        """Stage 2's prompt around each utterance's speech embeddings (N_i, H)."""
        embed = self.llm.get_input_embeddings()
        return assemble_slots(embed, self.prompt, [{"speech": sp} for sp in speech], targets, left_pad)

    def _joint_batch(self, img: torch.Tensor, speech: list[torch.Tensor], targets, left_pad: bool):
        """The joint prompt: each utterance's image positions img[b] (Q, H) and speech (N_i, H)."""
        slots = [{"image": img[b], "speech": sp} for b, sp in enumerate(speech)]
        return assemble_slots(self.llm.get_input_embeddings(), self.joint_prompt, slots, targets, left_pad)

    # ---- training ------------------------------------------------------------------------------
    def forward(
        self,
        kind: torch.Tensor,
        target_ids: torch.Tensor,
        target_lengths: torch.Tensor,
        feats: torch.Tensor | None = None,
        feat_lengths: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One batch of one kind (0 speech, 1 speech + image, 2 caption); target_ids (B, L) padded with IGNORE_ID."""
        k = int(kind)
        targets = [target_ids[b, : int(target_lengths[b])].tolist() for b in range(target_ids.shape[0])]
        batch, _ = self._assemble(k, feats, feat_lengths, images, targets, left_pad=False)
        out = self.llm(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
            labels=batch.labels,
        )
        return {"loss": out.loss, "acc": token_accuracy(out.logits, batch.labels)}

    # ---- decoding ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor,
        images: torch.Tensor | None = None,
        num_beams: int = 1,
        cif_weight: float = 0.0,
        picture_guidance: float = 0.0,
        **kwargs,
    ) -> list[dict]:
        """Transcribe a batch, with the picture of each utterance (B, 3, h, w) or without (None).

        ``picture_guidance`` > 0 (greedy, with pictures): every token's log-probability moves away from
        the speech-only prompt's by that weight (:class:`~asr.models.picture_guidance.PictureGuidance`)."""
        if picture_guidance and images is None:
            raise ValueError("picture guidance needs pictures: it contrasts the prompt with the picture and without")
        if picture_guidance and num_beams != 1:
            raise ValueError(f"picture guidance runs with greedy search only (num_beams {num_beams})")
        speech, rec = self.speech.speech_embeddings(feats, feat_lengths)  # list of (N_i, H), computed once
        if images is None:
            batch = self._speech_batch(speech, None, left_pad=True)
        else:
            batch = self._joint_batch(self.image_embeddings(images), speech, None, left_pad=True)
        processors = []
        if picture_guidance:  # the same speech under stage 2's prompt, run beside generate
            processors.append(PictureGuidance(self.llm, self._speech_batch(speech, None, left_pad=True), picture_guidance))
        return self.speech.generate_from(batch, rec, num_beams=num_beams, cif_weight=cif_weight, processors=processors, **kwargs)

    # ---- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path) -> None:
        """``multimodal.json``, ``image_x2l/`` (the whole interface) and ``speech_llm/`` (S-Adapter + LoRA,
        trained here or not: with ``stage1_dir`` known, the dir loads on its own as a stage-2 model)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self.x2l.save_pretrained(out_dir / "image_x2l")
        self.speech.save_pretrained(out_dir / "speech_llm")
        if self.stage1_dir is not None:
            write_stage1_link(out_dir / "speech_llm", str(self.stage1_dir))
        d = {"kind": KIND, "multimodal": asdict(self.config), "caption_prompt": asdict(self.caption_prompt_config)}
        write_text_atomic(out_dir / CONFIG_NAME, json.dumps(d, indent=2) + "\n")

    @classmethod
    def from_parts(cls, model_dir: str | Path, speech: SpeechLlm, stage1_dir: str | Path | None = None) -> MultimodalLlm:
        """A saved dir's config and image interface around an already loaded speech LLM (``speech_llm/``)."""
        model_dir = Path(model_dir)
        d = read_model_config(model_dir / CONFIG_NAME, KIND)
        image = ImageX2L.from_pretrained(model_dir / "image_x2l", freeze_encoder=True)
        return cls(
            MultimodalConfig.from_dict(d["multimodal"]), speech, image, PromptConfig(**d["caption_prompt"]), stage1_dir
        ).eval()
