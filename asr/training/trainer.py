"""A small, resumable trainer shared by every training stage.

- AdamW, linear warmup then inverse-square-root decay, gradient clipping, gradient accumulation.
- Checkpoints (model, optimizer, scheduler, step, position in the epoch, RNG states) written
  atomically every ``checkpoint_interval`` steps and at each epoch end; a rerun of the same command
  resumes from the newest one and continues exactly as an uninterrupted run would. Checkpoints
  record the input models a stage started from (``started_from``: by their weights); resuming from
  other ones is refused (:mod:`asr.training.started_from`).
- ``train_log.csv`` / ``valid_log.csv`` plus ``curves.png`` (loss and accuracy), tqdm progress.
- Scale: DistributedDataParallel over the trainable parameters when launched by torchrun (each rank
  takes its share of the epoch's batches, see :mod:`asr.training.distributed`; rank 0 alone writes
  logs, checkpoints and model dirs, logged losses are means over ranks), mixed precision
  (``precision: bf16`` on CPU or GPU, ``fp16`` with a GradScaler on GPU), batches read and collated
  ahead in worker processes (``num_workers``), checkpoint averaging (:func:`average_checkpoints`).
  docs/distributed.md has the launch commands.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr.config import dataclass_from_dict
from asr.io_utils import atomic_path, load_state_file, load_weights, save_weights, write_text_atomic
from asr.models.llm import LORA_DIR, LORA_WEIGHTS, split_lora
from asr.training import distributed as dist
from asr.training import started_from as started_from_lib
from asr.training.data import BatchLoader

log = logging.getLogger(__name__)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class TrainConfig:
    max_epochs: int = 20
    max_steps: int = 0  # 0 = no limit
    lr: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 0.01
    grad_clip: float = 5.0
    accum_grad: int = 1
    max_frames_per_batch: int = 20000
    max_batch_size: int = 256
    log_interval: int = 20
    checkpoint_interval: int = 500  # steps; checkpoints are also written at every epoch end
    keep_checkpoints: int = 3
    seed: int = 1234
    num_threads: int = 0  # 0 = leave torch's default
    preload: bool = True  # hold all features in memory
    # ---- scale (docs/distributed.md) ----
    device: str = "auto"  # auto | cpu | cuda | cuda:N; under torchrun, cuda means GPU LOCAL_RANK
    precision: str = "fp32"  # fp32 | bf16 (torch.autocast, CPU or GPU) | fp16 (autocast + GradScaler, GPU only)
    num_workers: int = 0  # processes reading + collating batches ahead; 0 = in the training process
    gradient_checkpointing: bool = False  # stage 2: activation checkpointing in the LLM (less memory, slower)
    bucket_shuffle: bool = False  # re-form batches each epoch inside length buckets (see FrameBatchSampler)
    num_buckets: int = 10
    find_unused_parameters: bool = False  # DDP: only for models with trainable parameters a step may not use

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"train precision {self.precision!r} not supported (use one of {', '.join(PRECISIONS)})")
        if self.accum_grad < 1:
            raise ValueError(f"train accum_grad must be >= 1 (got {self.accum_grad})")
        if self.num_workers < 0:
            raise ValueError(f"train num_workers must be >= 0 (got {self.num_workers})")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"train device {self.device!r} not supported (use auto, cpu, cuda or cuda:N)")

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        return dataclass_from_dict(cls, d, "train config")


def warmup_inv_sqrt(warmup: int) -> Callable[[int], float]:
    """LR multiplier: rises linearly to 1 over ``warmup`` steps, then decays as sqrt(warmup/step)."""
    warmup = max(1, warmup)
    return lambda step: (step + 1) / warmup if step < warmup else math.sqrt(warmup / (step + 1))


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and random: call before building the model so its initialization repeats."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


class Trainer:
    """Trains ``model`` (whose forward(**batch) returns a dict with ``loss``) on batches from ``sampler``.

    ``collate(indices) -> batch dict`` builds a batch; keys that are tensors are passed to the model
    (moved to the training device). ``valid_batches() -> iterable of batches`` (a
    :class:`asr.training.data.Batches` lets each rank validate on its share). Launched by torchrun,
    the trainer joins the process group and trains a DistributedDataParallel copy of the model's
    trainable parameters; one optimizer step then sees ``world_size x accum_grad`` batches.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        sampler,
        collate: Callable,
        config: TrainConfig,
        exp_dir: str | Path,
        valid_batches: Callable[[], list[dict]] | None = None,
        trainable: list[torch.nn.Parameter] | list[dict] | None = None,
        started_from: dict[str, str | Path | None] | None = None,
    ):
        self.model, self.sampler, self.collate, self.config = model, sampler, collate, config
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.valid_batches = valid_batches
        self.device = dist.init_distributed(config.device)
        self.rank, self.world_size, self.is_main = dist.rank(), dist.world_size(), dist.is_main()
        if config.precision == "fp16" and self.device.type != "cuda":
            raise ValueError("train precision fp16 needs a CUDA device (it trains with a GradScaler); use precision: bf16 on CPU")
        model.to(self.device)
        if isinstance(vars(model).get("device"), torch.device):
            model.device = self.device  # models that move their inputs themselves (SpeechLlm)
        params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
        if params and isinstance(params[0], dict):  # optimizer groups; "lr_scale" multiplies config.lr
            params = [{"params": g["params"], "lr": config.lr * float(g.get("lr_scale", 1.0))} for g in params]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.trained_params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_inv_sqrt(config.warmup_steps))
        self.scaler = torch.amp.GradScaler("cuda", enabled=config.precision == "fp16")
        self.ddp = self._wrap_ddp(model) if self.world_size > 1 else None
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # global batches (all ranks together) of the current epoch already trained on
        self.best_valid = float("inf")
        self.started_from = started_from_lib.describe(started_from)  # kept in checkpoints, checked on resume

    def _wrap_ddp(self, model: torch.nn.Module):
        """DDP over the trainable parameters only: frozen ones (a frozen LLM, a frozen stage-1 model) are
        neither broadcast nor all-reduced; every rank built or loaded them the same way. Of the buffers,
        only the running statistics of batch norms in trained modules change in training: DDP keeps those
        in step with rank 0; constant ones (CMVN, positions, a tied classifier's LLM embeddings) are left alone."""
        from torch.nn.modules.batchnorm import _NormBase
        from torch.nn.parallel import DistributedDataParallel

        ignore = [n for n, p in model.named_parameters() if not p.requires_grad]
        synced = set()
        if not hasattr(model, "trainable_state_dict"):  # stage-2 models save only trained tensors: no buffer matters
            for name, module in model.named_modules():
                if isinstance(module, _NormBase) and any(p.requires_grad for p in module.parameters()):
                    synced |= {f"{name}.{b}" if name else b for b, _ in module.named_buffers(recurse=False)}
        ignore += [n for n, _ in model.named_buffers() if n not in synced]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
        return DistributedDataParallel(
            model,
            device_ids=[self.device] if self.device.type == "cuda" else None,
            find_unused_parameters=self.config.find_unused_parameters,
        )

    def _autocast(self):
        dtype = PRECISIONS[self.config.precision]
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    # ---- checkpoints ---------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        return list_checkpoints(self.ckpt_dir)

    def _model_state(self) -> dict:
        """What a checkpoint holds of the model: only the trained tensors where the model says which
        (a frozen LLM is not copied into every checkpoint)."""
        if hasattr(self.model, "trainable_state_dict"):
            return self.model.trainable_state_dict()
        return self.model.state_dict()

    def save_checkpoint(self) -> Path:
        """Every rank calls this (the RNG states of all ranks are gathered); rank 0 writes."""
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        rngs = dist.all_gather_object(_rng_state())
        if not self.is_main:
            return path
        state = {
            "model": self._model_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_valid": self.best_valid,
            "rng": rngs[0],
            "rng_ranks": rngs,
            "world_size": self.world_size,
            "precision": self.config.precision,
            "started_from": self.started_from,
        }
        with atomic_path(path) as tmp:
            torch.save(state, tmp)
        for old in self._checkpoints()[: -self.config.keep_checkpoints]:
            old.unlink()
        return path

    def resume(self) -> bool:
        ckpts = self._checkpoints()
        if not ckpts:
            return False
        state = torch.load(ckpts[-1], map_location="cpu", weights_only=False)
        started_from_lib.check_same(state.get("started_from"), self.started_from, ckpts[-1], self.exp_dir)
        if hasattr(self.model, "load_trainable_state_dict"):
            self.model.load_trainable_state_dict(state["model"])
        else:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_valid = state["best_valid"]
        rngs = state.get("rng_ranks") or [state["rng"]]
        if len(rngs) != self.world_size:
            log.warning(
                "%s was written by %d rank(s), training goes on with %d: the data order continues exactly, "
                "random draws (dropout, SpecAugment) do not",
                ckpts[-1],
                len(rngs),
                self.world_size,
            )
        _set_rng_state(rngs[self.rank] if self.rank < len(rngs) else rngs[0])
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpts[-1], self.step, self.epoch, self.batch_in_epoch)
        return True

    # ---- logging -------------------------------------------------------------------------------
    def _append_csv(self, name: str, row: dict) -> None:
        if not self.is_main:
            return
        path = self.exp_dir / name
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _truncate_logs(self) -> None:
        """After a resume, drop log rows written after the checkpoint (they will be written again)."""
        if not self.is_main:
            return
        for name in ("train_log.csv", "valid_log.csv"):
            path = self.exp_dir / name
            if not path.exists():
                continue
            with path.open() as f:
                rows = list(csv.DictReader(f))
            if not rows:
                continue
            keep = [r for r in rows if int(r["step"]) <= self.step]
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(keep)

    def _plot(self) -> None:
        if self.is_main:
            plot_curves(self.exp_dir)

    # ---- the loop ------------------------------------------------------------------------------
    def _model_inputs(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def validate(self) -> dict:
        """Mean of each model output over the validation utterances (each rank runs its share)."""
        if self.valid_batches is None:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        batches = self.valid_batches()
        if self.world_size > 1:
            batches = (
                batches.shard(self.rank, self.world_size)
                if hasattr(batches, "shard")
                else (b for i, b in enumerate(batches) if i % self.world_size == self.rank)
            )
        with torch.no_grad(), self._autocast():
            for batch in batches:
                out = self.model(**self._model_inputs(batch))
                n = len(batch["utt_ids"])
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v) * n
                count += n
        self.model.train()
        if self.world_size > 1:
            parts = dist.all_gather_object((totals, count))
            totals, count = {}, sum(c for _, c in parts)
            for part, _ in parts:
                for k, v in part.items():
                    totals[k] = totals.get(k, 0.0) + v
        return {k: v / max(count, 1) for k, v in totals.items()}

    def _validate_and_keep_best(self) -> None:
        """Validate; a lower valid loss than any before replaces ``best/``."""
        metrics = self.validate()
        if metrics:
            row = {"step": self.step, "epoch": self.epoch + 1, **{k: round(v, 5) for k, v in metrics.items()}}
            self._append_csv("valid_log.csv", row)
            if self.is_main:
                log.info("epoch %d valid: %s", self.epoch + 1, row)
            if metrics["loss"] < self.best_valid:
                self.best_valid = metrics["loss"]
                if self.is_main and hasattr(self.model, "save_pretrained"):
                    self.model.save_pretrained(self.exp_dir / "best")

    def _finish_epoch(self) -> None:
        self._validate_and_keep_best()
        self.epoch += 1
        self.batch_in_epoch = 0
        self.save_checkpoint()
        self._plot()

    def _train_step(self, micro_batches, n_micro: int) -> tuple[dict[str, float], torch.Tensor]:
        """Forward/backward over ``n_micro`` batches (gradients averaged: DDP all-reduces on the last
        one only), clip, optimizer step. Returns the mean outputs and the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        model = self.ddp if self.ddp is not None else self.model
        for j in range(n_micro):
            batch = next(micro_batches)
            sync = self.ddp is None or j == n_micro - 1
            with contextlib.nullcontext() if sync else self.ddp.no_sync():
                with self._autocast():
                    out = model(**self._model_inputs(batch))
                self.scaler.scale(out["loss"].float() / n_micro).backward()
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / n_micro
        self.scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained_params, self.config.grad_clip)
        if torch.isfinite(grad_norm):
            self.scaler.step(self.optimizer)
        elif not self.scaler.is_enabled():
            log.warning("step %d: non-finite gradient norm, update skipped", self.step + 1)
        self.scaler.update()  # fp16: a non-finite step lowers the loss scale
        self.scheduler.step()
        return sums, grad_norm

    def train(self) -> None:
        c = self.config
        if c.num_threads:
            torch.set_num_threads(c.num_threads)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self.resume():  # fresh runs start from the RNG state left by seed_everything + model init
            self._truncate_logs()
        first_step = self.step
        self.model.train()
        shares = dist.DistributedBatchSampler(self.sampler, self.world_size, self.rank)
        loader = BatchLoader(self.collate, c.num_workers, pin_memory=self.device.type == "cuda")
        W = self.world_size
        done = lambda: (c.max_steps and self.step >= c.max_steps) or self.epoch >= c.max_epochs  # noqa: E731
        bar = tqdm(
            total=c.max_steps or None, initial=self.step, desc="train", mininterval=10, unit="step", disable=not self.is_main
        )
        while not done():
            shares.set_epoch(self.epoch)
            start = self.batch_in_epoch
            local = shares.local_batches(start)
            micro_batches = iter(loader(local))
            t0 = time.time()
            for first in range(0, len(local), c.accum_grad):
                n_micro = min(c.accum_grad, len(local) - first)
                sums, grad_norm = self._train_step(micro_batches, n_micro)
                self.step += 1
                self.batch_in_epoch = start + (first + n_micro) * W
                bar.update(1)
                if self.step % c.log_interval == 0:
                    sums = dist.all_reduce_mean(sums)
                    row = {
                        "step": self.step,
                        "epoch": self.epoch + 1,
                        "lr": f"{self.scheduler.get_last_lr()[0]:.3e}",
                        **{k: round(v, 5) for k, v in sums.items()},
                        "grad_norm": round(float(grad_norm), 3),
                        "sec_per_step": round((time.time() - t0) / c.log_interval, 3),
                    }
                    self._append_csv("train_log.csv", row)
                    bar.set_postfix(loss=f"{sums['loss']:.3f}", acc=f"{sums.get('acc', 0):.3f}")
                    t0 = time.time()
                if self.step % c.checkpoint_interval == 0:
                    self.save_checkpoint()
                if done():
                    break
            else:
                del micro_batches
                self._finish_epoch()
                continue
            break
        bar.close()
        if self.batch_in_epoch:  # stopped by max_steps inside an epoch
            if self.step > first_step:  # the steps since the last epoch's end count for best/ too
                self._validate_and_keep_best()
            self.save_checkpoint()
            self._plot()
        dist.barrier()


def publish_final(exp_dir: Path, model: torch.nn.Module, finalize: Callable[[Path], None]) -> Path:
    """Make ``exp_dir/final``: a copy of ``best/`` (lowest valid loss) if validation ran, else the
    model as it is; ``finalize(dir)`` adds what decoding needs. Assembled in a temp dir, then renamed
    into place: never a half-written final/. Under torchrun rank 0 writes it and every rank returns
    once it is there."""
    final, tmp = exp_dir / "final", exp_dir / ".final.tmp"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        if (exp_dir / "best").exists():
            shutil.copytree(exp_dir / "best", tmp)
        else:
            model.save_pretrained(tmp)
        finalize(tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    dist.barrier()
    return final


# ---- checkpoint averaging ------------------------------------------------------------------------
def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """``step_*.pt`` of a checkpoint dir, oldest first."""
    return sorted(Path(ckpt_dir).glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))


# model dir config -> its weights file (the first that exists)
MODEL_WEIGHTS = {"speech_llm.json": ("adapter.safetensors", "adapter.pt"), "config.json": ("model.safetensors", "model.pt")}


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """The element-wise mean of the ``model`` tensors of these checkpoints (accumulated in float64, one
    checkpoint in memory at a time); tensors that are not floating point (counters) come from the last."""
    total: dict[str, torch.Tensor] = {}
    for i, path in enumerate(paths):
        state = torch.load(path, map_location="cpu", weights_only=False)
        if "model" not in state:
            raise ValueError(f"{path}: not a training checkpoint (no 'model' entry)")
        model = state["model"]
        if i and set(model) != set(total):
            diff = sorted(set(model) ^ set(total))
            raise ValueError(
                f"{path}: holds other tensors than {paths[0]} ({', '.join(diff[:5])}): "
                "checkpoints of different models cannot be averaged"
            )
        for k, v in model.items():
            if v.is_floating_point():
                total[k] = total[k] + v.double() if i else v.double()
            else:
                total[k] = v
    dtypes = {k: v.dtype for k, v in model.items()}
    return {k: (v / len(paths)).to(dtypes[k]) if dtypes[k].is_floating_point else v for k, v in total.items()}


def select_checkpoints(exp_dir: str | Path, num: int | None = None, steps: list[int] | None = None) -> list[Path]:
    """The last ``num`` step checkpoints of ``exp_dir/checkpoints`` (all kept ones when None), or those of ``steps``."""
    ckpt_dir = Path(exp_dir) / "checkpoints"
    ckpts = list_checkpoints(ckpt_dir)
    if not ckpts:
        raise FileNotFoundError(f"{ckpt_dir}: no step_*.pt checkpoints")
    if steps:
        by_step = {int(p.stem.split("_")[1]): p for p in ckpts}
        missing = [s for s in steps if s not in by_step]
        if missing:
            raise FileNotFoundError(
                f"{ckpt_dir}: no checkpoint of step(s) {missing} (kept: {sorted(by_step)}; "
                "raise train.keep_checkpoints to keep more)"
            )
        return [by_step[s] for s in sorted(set(steps))]
    if num is not None and num < 1:
        raise ValueError(f"--num must be >= 1 (got {num})")
    if num and num > len(ckpts):
        raise ValueError(
            f"{ckpt_dir}: {num} checkpoints asked for, {len(ckpts)} kept (raise train.keep_checkpoints to keep more)"
        )
    return ckpts[-num:] if num else ckpts


def _same_tensor_names(averaged: dict, reference: dict, exp_dir: Path, where: Path) -> None:
    if set(reference) != set(averaged):
        diff = sorted(set(reference) ^ set(averaged))
        raise ValueError(
            f"checkpoints in {exp_dir / 'checkpoints'} do not match {where} "
            f"({', '.join(diff[:5])}): another model was trained in this exp dir"
        )


def average_checkpoints(exp_dir: str | Path, out_dir: str | Path, num: int | None = None, steps: list[int] | None = None) -> Path:
    """Average the model tensors of step checkpoints into a model dir loadable like ``final/``.

    The averaged tensors replace the template's weights files (stage 1: ``model.safetensors``; stage 2:
    ``adapter.safetensors`` and ``lora/``); config, tokenizer, feature description and stage-1 link are copied from
    ``exp_dir/final`` (else ``best/``). ``averaged.json`` lists the checkpoints. Built in a temp dir
    and renamed into place.
    """
    exp_dir, out_dir = Path(exp_dir), Path(out_dir)
    paths = select_checkpoints(exp_dir, num, steps)
    template = next((exp_dir / d for d in ("final", "best") if (exp_dir / d).is_dir()), None)
    if template is None:
        raise FileNotFoundError(
            f"{exp_dir}: no final/ or best/ model dir to take the config and tokenizer from (train to the end once, then average)"
        )
    weights = next(
        (w for cfg, names in MODEL_WEIGHTS.items() if (template / cfg).exists() for w in names if (template / w).exists()), None
    )
    if weights is None:
        raise FileNotFoundError(
            f"{template}: neither config.json + model.safetensors/.pt (stage 1) nor speech_llm.json + adapter.safetensors/.pt (stage 2)"
        )
    averaged = average_state_dicts(paths)
    # a stage-2 dir keeps its LoRA tensors apart, in peft's adapter format (lora/)
    lora = {}
    if (template / LORA_DIR).is_dir():
        averaged, lora = split_lora(averaged)
        _same_tensor_names(lora, load_state_file(template / LORA_DIR / LORA_WEIGHTS), exp_dir, template / LORA_DIR)
    _same_tensor_names(averaged, load_weights(template, Path(weights).stem), exp_dir, template / weights)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(template, tmp, symlinks=True)
        for stale in ("averaged.json",):
            (tmp / stale).unlink(missing_ok=True)
        save_weights(tmp / weights, averaged)
        if lora:
            save_weights(tmp / LORA_DIR / LORA_WEIGHTS, lora)
        write_text_atomic(
            tmp / "averaged.json",
            json.dumps(
                {
                    "exp_dir": str(exp_dir.resolve()),
                    "checkpoints": [p.name for p in paths],
                    "steps": [int(p.stem.split("_")[1]) for p in paths],
                    "config_from": template.name,
                },
                indent=2,
            )
            + "\n",
        )
        shutil.rmtree(out_dir, ignore_errors=True)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def plot_curves(exp_dir: str | Path) -> Path | None:
    """Plot train/valid loss and accuracy from the CSV logs into ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp_dir = Path(exp_dir)

    def read(name):
        path = exp_dir / name
        if not path.exists():
            return []
        with path.open() as f:
            return list(csv.DictReader(f))

    train, valid = read("train_log.csv"), read("valid_log.csv")
    if not train and not valid:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, key in zip(axes, ("loss", "acc")):
        for rows, label, style in ((train, "train", "-"), (valid, "valid", "o-")):
            pts = [(int(r["step"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
            if pts:
                ax.plot(*zip(*pts), style, label=label, markersize=4)
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(exp_dir.name)
    fig.tight_layout()
    out = exp_dir / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return out


def run_entry_point(train_call: Callable[[], Path]) -> int:
    """``python -m asr.training.<stage>``: log to stderr, run the training, print the final dir; a bad
    config or a missing input is one line on stderr and exit status 2."""
    import sys

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    try:
        final = train_call()
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(final)
    return 0
