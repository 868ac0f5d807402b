"""The skeleton every training stage runs (stage 1, stage 2, the image stage, stage 3).

    config (loaded and checked by the stage) + command-line overrides of its ``train`` section
    -> torch threads -> the distributed group (torchrun: join it; one process: nothing)
    -> seed -> ``build(...)``: the stage's model, batches, validation and what it started from
    -> Trainer (resumable) -> ``final/`` published, finished by the stage's ``finalize``

A stage says only what differs: how it builds its model and data (:class:`StageParts`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from asr.training import distributed as dist
from asr.training.trainer import TrainConfig, Trainer, publish_final, seed_everything


@dataclass
class StageParts:
    """What a stage's ``build`` returns: everything the Trainer needs, and the final dir's finishing."""

    model: torch.nn.Module
    batches: Iterable  # the batch sampler: lists of example indices (or whole batches) per step
    collate: Callable  # indices -> a batch dict
    valid_batches: Callable[[], Iterable] | None = None  # a fresh iterable of validation batches
    trainable: list | None = None  # parameters or optimizer groups (default: those requiring grad)
    started_from: dict = field(default_factory=dict)  # input models, recorded in each checkpoint
    finalize: Callable[[Path], None] = lambda model_dir: None  # completes final/ (tokenizer, links, scores)


def train_config(config: dict, overrides: dict | None, where: str | Path) -> TrainConfig:
    """The ``train`` section with command-line overrides; a bad one is an error naming the config."""
    try:
        return TrainConfig.from_dict({**(config.get("train") or {}), **(overrides or {})})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def run_stage(train_cfg: TrainConfig, exp_dir: str | Path, build: Callable[[torch.device], StageParts]) -> Path:
    """Run one training stage to its ``exp_dir/final`` (a rerun resumes from the newest checkpoint).

    ``build(device)`` is called after threads, process group and seed are set, so that the model's
    initialization repeats; under torchrun every rank builds, rank 0 writes."""
    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    owns_group = not dist.is_initialized()
    device = dist.init_distributed(train_cfg.device)
    try:
        seed_everything(train_cfg.seed)
        parts = build(device)
        Trainer(
            parts.model,
            parts.batches,
            parts.collate,
            train_cfg,
            Path(exp_dir),
            valid_batches=parts.valid_batches,
            trainable=parts.trainable,
            started_from=parts.started_from,
        ).train()
        return publish_final(Path(exp_dir), parts.model, parts.finalize)
    finally:
        if owns_group:
            dist.cleanup()
