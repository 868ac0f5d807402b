"""A small, resumable trainer shared by every training stage.

- AdamW, linear warmup then inverse-square-root decay, gradient clipping, gradient accumulation.
- Checkpoints (model, optimizer, scheduler, step, position in the epoch, RNG states) written
  atomically every ``checkpoint_interval`` steps and at each epoch end; a rerun of the same command
  resumes from the newest one and continues exactly as an uninterrupted run would.
- ``train_log.csv`` / ``valid_log.csv`` plus ``curves.png`` (loss and accuracy), tqdm progress.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from asr.io_utils import atomic_path

log = logging.getLogger(__name__)


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
    stop_at_step: int = 0  # testing aid: exit abruptly (as if killed) after this step, without saving

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown train config keys: {sorted(unknown)}")
        return cls(**d)


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
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class Trainer:
    """Trains ``model`` (whose forward(**batch) returns a dict with ``loss``) on batches from ``sampler``.

    ``collate(indices) -> batch dict`` builds a batch; keys that are tensors are passed to the model.
    """

    def __init__(self, model: torch.nn.Module, sampler, collate: Callable, config: TrainConfig, exp_dir: str | Path,
                 valid_batches: Callable[[], list[dict]] | None = None, trainable: list[torch.nn.Parameter] | None = None):
        self.model, self.sampler, self.collate, self.config = model, sampler, collate, config
        self.exp_dir = Path(exp_dir)
        self.ckpt_dir = self.exp_dir / "checkpoints"
        self.valid_batches = valid_batches
        params = trainable if trainable is not None else [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, warmup_inv_sqrt(config.warmup_steps))
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0  # batches of the current epoch already trained on
        self.best_valid = float("inf")

    # ---- checkpoints ---------------------------------------------------------------------------
    def _checkpoints(self) -> list[Path]:
        return sorted(self.ckpt_dir.glob("step_*.pt"), key=lambda p: int(p.stem.split("_")[1]))

    def _model_state(self) -> dict:
        """What a checkpoint holds of the model: only the trained tensors where the model says which
        (a frozen LLM is not copied into every checkpoint)."""
        if hasattr(self.model, "trainable_state_dict"):
            return self.model.trainable_state_dict()
        return self.model.state_dict()

    def save_checkpoint(self) -> Path:
        path = self.ckpt_dir / f"step_{self.step:08d}.pt"
        state = {
            "model": self._model_state(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": self.step, "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch, "best_valid": self.best_valid, "rng": _rng_state(),
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
        if hasattr(self.model, "load_trainable_state_dict"):
            self.model.load_trainable_state_dict(state["model"])
        else:
            self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_valid = state["best_valid"]
        _set_rng_state(state["rng"])
        log.info("resumed from %s (step %d, epoch %d, batch %d)", ckpts[-1], self.step, self.epoch, self.batch_in_epoch)
        return True

    # ---- logging -------------------------------------------------------------------------------
    def _append_csv(self, name: str, row: dict) -> None:
        path = self.exp_dir / name
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _truncate_logs(self) -> None:
        """After a resume, drop log rows written after the checkpoint (they will be written again)."""
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

    # ---- the loop ------------------------------------------------------------------------------
    def _model_inputs(self, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}

    def validate(self) -> dict:
        if self.valid_batches is None:
            return {}
        self.model.eval()
        totals: dict[str, float] = {}
        count = 0
        with torch.no_grad():
            for batch in self.valid_batches():
                out = self.model(**self._model_inputs(batch))
                n = len(batch["utt_ids"])
                for k, v in out.items():
                    totals[k] = totals.get(k, 0.0) + float(v) * n
                count += n
        self.model.train()
        return {k: v / max(count, 1) for k, v in totals.items()}

    def _finish_epoch(self) -> None:
        metrics = self.validate()
        if metrics:
            row = {"step": self.step, "epoch": self.epoch + 1, **{k: round(v, 5) for k, v in metrics.items()}}
            self._append_csv("valid_log.csv", row)
            log.info("epoch %d valid: %s", self.epoch + 1, row)
            if metrics["loss"] < self.best_valid:
                self.best_valid = metrics["loss"]
                if hasattr(self.model, "save_pretrained"):
                    self.model.save_pretrained(self.exp_dir / "best")
        self.epoch += 1
        self.batch_in_epoch = 0
        self.save_checkpoint()
        plot_curves(self.exp_dir)

    def train(self) -> None:
        c = self.config
        if c.num_threads:
            torch.set_num_threads(c.num_threads)
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self.resume():  # fresh runs start from the RNG state left by seed_everything + model init
            self._truncate_logs()
        self.model.train()
        done = lambda: (c.max_steps and self.step >= c.max_steps) or self.epoch >= c.max_epochs  # noqa: E731
        bar = tqdm(total=c.max_steps or None, initial=self.step, desc="train", mininterval=10, unit="step")
        while not done():
            self.sampler.set_epoch(self.epoch)
            batches = self.sampler.epoch_order()
            t0 = time.time()
            for batch_idx in range(self.batch_in_epoch, len(batches), c.accum_grad):
                group = batches[batch_idx : batch_idx + c.accum_grad]
                self.optimizer.zero_grad(set_to_none=True)
                sums: dict[str, float] = {}
                for indices in group:
                    out = self.model(**self._model_inputs(self.collate(indices)))
                    (out["loss"] / len(group)).backward()
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) / len(group)
                grad_norm = torch.nn.utils.clip_grad_norm_(self.optimizer.param_groups[0]["params"], c.grad_clip)
                if torch.isfinite(grad_norm):
                    self.optimizer.step()
                else:
                    log.warning("step %d: non-finite gradient norm, update skipped", self.step + 1)
                self.scheduler.step()
                self.step += 1
                self.batch_in_epoch = batch_idx + len(group)
                bar.update(1)
                if self.step % c.log_interval == 0:
                    row = {"step": self.step, "epoch": self.epoch + 1, "lr": f"{self.scheduler.get_last_lr()[0]:.3e}",
                           **{k: round(v, 5) for k, v in sums.items()}, "grad_norm": round(float(grad_norm), 3),
                           "sec_per_step": round((time.time() - t0) / c.log_interval, 3)}
                    self._append_csv("train_log.csv", row)
                    bar.set_postfix(loss=f"{sums['loss']:.3f}", acc=f"{sums.get('acc', 0):.3f}")
                    t0 = time.time()
                if c.stop_at_step and self.step == c.stop_at_step:
                    os._exit(3)  # simulate a kill: nothing beyond the last checkpoint is saved
                if self.step % c.checkpoint_interval == 0:
                    self.save_checkpoint()
                if done():
                    break
            else:
                self._finish_epoch()
                continue
            break
        bar.close()
        if self.batch_in_epoch:  # stopped by max_steps inside an epoch
            self.save_checkpoint()
            plot_curves(self.exp_dir)


def publish_final(exp_dir: Path, model: torch.nn.Module, finalize: Callable[[Path], None]) -> Path:
    """Make ``exp_dir/final``: a copy of ``best/`` (lowest valid loss) if validation ran, else the
    model as it is; ``finalize(dir)`` adds what decoding needs. Assembled in a temp dir, then renamed
    into place: never a half-written final/."""
    final, tmp = exp_dir / "final", exp_dir / ".final.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if (exp_dir / "best").exists():
        shutil.copytree(exp_dir / "best", tmp)
    else:
        model.save_pretrained(tmp)
    finalize(tmp)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    return final


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
