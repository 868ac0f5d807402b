"""Stage-2 training entry point (X-LLM stage 2): the S-Adapter (+ optional LoRA) between a frozen
stage-1 model and a frozen LLM, trained with the LLM's next-token loss on the transcripts.

Writes into ``exp_dir`` what stage 1 writes (checkpoints/ holding only the trained tensors,
train_log.csv, valid_log.csv, curves.png, best/) and ``final/``: ``speech_llm.json`` +
``adapter.safetensors`` (+ ``lora/``) + ``stage1.json`` (the stage-1 model dir it was trained on).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from asr.config import load_config
from asr.data.batching import pad_targets
from asr.models.auto import load_stage1
from asr.models.llm import load_llm
from asr.models.speech_llm import SpeechLlm, SpeechLlmConfig, write_stage1_link
from asr.tokenizer import load_tokenizer
from asr.training.data import FeatureDataset, speech_batches
from asr.training.stage import StageParts, run_stage, train_config
from asr.training.trainer import TrainConfig

log = logging.getLogger(__name__)


class LlmTargets:
    """Batches of a stage-1 FeatureDataset with the transcripts as LLM token ids (+ eos)."""

    def __init__(self, dataset: FeatureDataset, model: SpeechLlm):
        self.dataset = dataset
        self.targets = [model.prompt.target_ids(u.text) for u in dataset.utts]

    def __len__(self) -> int:
        return len(self.dataset)

    def collate(self, indices: list[int]) -> dict:
        batch = self.dataset.collate(indices)
        return {
            "utt_ids": batch["utt_ids"],
            "feats": batch["feats"],
            "feat_lengths": batch["feat_lengths"],
            **pad_targets([self.targets[i] for i in indices]),
        }


def build_speech_llm(
    config: dict, stage1_dir: Path, train_cfg: TrainConfig | None = None, device: torch.device | None = None
) -> SpeechLlm:
    """The stage-2 model; with a training config: the LLM on the training ``device`` and, with
    ``gradient_checkpointing``, activation checkpointing in the LLM (which also turns off the cached
    prompt prefix: its layers are recomputed in the backward pass)."""
    sl_cfg = SpeechLlmConfig.from_dict(config.get("speech_llm", {}))
    # the LLM is loaded onto the training device; the saved config keeps the device the user wrote
    llm_cfg = dataclasses.replace(sl_cfg.llm, device=str(device)) if device is not None else sl_cfg.llm
    model = SpeechLlm(sl_cfg, load_stage1(stage1_dir), load_llm(llm_cfg), load_tokenizer(stage1_dir / "tokenizer"))
    if train_cfg is not None and train_cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model.llm)
    return model


def enable_gradient_checkpointing(llm) -> None:
    """transformers' activation (gradient) checkpointing, non-reentrant: the frozen LLM's inputs are the
    adapter's outputs and its own parameters need no gradient. (``activation_checkpointing_enable``
    in transformers 5.2x, ``gradient_checkpointing_enable`` before.)"""
    if not getattr(llm, "supports_gradient_checkpointing", True):
        raise ValueError(f"train.gradient_checkpointing: {type(llm).__name__} does not support gradient checkpointing")
    if hasattr(llm, "activation_checkpointing_enable"):
        llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    elif hasattr(llm, "gradient_checkpointing_enable"):
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        raise ValueError(f"train.gradient_checkpointing: {type(llm).__name__} has no checkpointing switch")


def train(
    config_path: str | Path,
    stage1_dir: str | Path,
    train_dir: str | Path,
    valid_dir: str | Path | None,
    exp_dir: str | Path,
    overrides: dict | None = None,
) -> Path:
    config = load_config(config_path)
    train_cfg = train_config(config, overrides, config_path)
    stage1_dir = Path(stage1_dir)

    def build(device) -> StageParts:
        model = build_speech_llm(config, stage1_dir, train_cfg, device)
        train_set, sampler, valid_fn = speech_batches(
            train_dir,
            valid_dir,
            model.stage1_units(),  # loaded with the model
            model.stage1.frame_rate_divisor,
            train_cfg,
            wrap=lambda dataset: LlmTargets(dataset, model),
        )
        trainable = [p for p in model.parameters() if p.requires_grad]
        log.info(
            "speech LLM: %.2fM trainable parameters (adapter%s), LLM %s frozen; %d utterances in %d batches",
            sum(p.numel() for p in trainable) / 1e6,
            " + LoRA" if model.config.llm.lora.enabled else "",
            model.config.llm.name_or_path,
            len(train_set),
            len(sampler),
        )
        return StageParts(
            model,
            sampler,
            train_set.collate,
            valid_fn,
            trainable=trainable,
            started_from={"stage-1 model": stage1_dir},
            finalize=lambda d: write_stage1_link(d, str(stage1_dir.resolve())),
        )

    return run_stage(train_cfg, exp_dir, build)
