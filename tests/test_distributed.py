"""Training on several processes (torch.distributed, gloo on CPU): two ranks train exactly what one
process trains on the union of their batches, and `asr train` runs under torchrun and resumes a
two-rank run from a mid-epoch checkpoint to the same parameters as an uninterrupted one.

Run as a script (``python tests/test_distributed.py --worker OUT``, under torchrun) this file is
also the worker of the first test.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import tiny_train_config

ROOT = Path(__file__).resolve().parents[1]
N_UTTS, FRAMES, FEAT_DIM, TOKENS, VOCAB = 16, 48, 12, 4, 24
STEPS = 5


# ---- the Trainer-level equivalence ----------------------------------------------------------------
def _model():
    from asr.models.cif_asr import CifAsrConfig, CifAsrModel, SpecAugmentConfig

    torch.manual_seed(0)
    # no dropout, no SpecAugment, no BatchNorm: a step's gradient is a function of its utterances alone
    cfg = CifAsrConfig(
        vocab_size=VOCAB,
        feat_dim=FEAT_DIM,
        encoder_type="frozen",
        frozen_pool=2,
        d_model=16,
        cformer_layers=1,
        cformer_heads=2,
        cformer_ffn=32,
        dropout=0.0,
        ctc_weight=0.3,
        specaug=SpecAugmentConfig(enabled=False),
    )
    return CifAsrModel(cfg)


def _collate(indices: list[int]) -> dict:
    """Utterances of equal length with equal token counts: every loss term (token-mean CE, per-utterance
    CTC and quantity) over a union of batches is the mean of the per-batch losses."""
    feats, targets = [], []
    for i in indices:
        g = torch.Generator().manual_seed(1000 + i)
        feats.append(torch.randn(FRAMES, FEAT_DIM, generator=g))
        targets.append(torch.randint(2, VOCAB, (TOKENS,), generator=g))
    n = len(indices)
    return {
        "utt_ids": [f"u{i}" for i in indices],
        "feats": torch.stack(feats),
        "feat_lengths": torch.full((n,), FRAMES),
        "targets": torch.stack(targets),
        "target_lengths": torch.full((n,), TOKENS),
    }


class PairSampler:
    """Batches of 2 utterances, their order shuffled per epoch (what each rank of the DDP run shares)."""

    def __init__(self):
        self.batches, self.epoch = [[2 * i, 2 * i + 1] for i in range(N_UTTS // 2)], 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[list[int]]:
        order = list(self.batches)
        random.Random(self.epoch).shuffle(order)
        return order


class UnionSampler(PairSampler):
    """One batch per optimizer step of the DDP run: the union of the ``group`` batches it consumed."""

    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def epoch_order(self) -> list[list[int]]:
        order = super().epoch_order()
        return [sum(order[i : i + self.group], []) for i in range(0, len(order), self.group)]


def _train_config(**over):
    return tiny_train_config(**{"max_steps": STEPS, "keep_checkpoints": 1, **over})


def _worker(out: Path) -> None:
    """2 ranks x accum_grad 2: each optimizer step sees 4 batches of 2 utterances."""
    from asr.training import distributed as dist
    from asr.training.trainer import Trainer

    model = _model()
    trainer = Trainer(model, PairSampler(), _collate, _train_config(accum_grad=2), out)
    assert dist.world_size() == 2, "the worker must run under torchrun --nproc_per_node 2"
    trainer.train()
    if dist.is_main():
        (out / "ranks.json").write_text(json.dumps({"world_size": dist.world_size()}))
    dist.cleanup()


def _env() -> dict:
    return {
        "OMP_NUM_THREADS": "1",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "HOME": os.environ.get("HOME", "/tmp"),
        "XLLM_ASR_CACHE": os.environ.get("XLLM_ASR_CACHE", ""),
    }


def torchrun(*args: str, nproc: int = 2, timeout: int = 120) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]
    env = {k: v for k, v in _env().items() if v}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def _params(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


@pytest.mark.slow
def test_two_ranks_train_what_one_process_trains_on_the_union_of_their_batches(tmp_path):
    proc = torchrun(str(Path(__file__)), "--worker", str(tmp_path / "ddp"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "ddp" / "ranks.json").read_text())["world_size"] == 2
    ddp = _params(tmp_path / "ddp" / "checkpoints" / f"step_{STEPS:08d}.pt")

    from asr.training.trainer import Trainer

    # one process, one batch per step: the 4 batches (2 ranks x accum 2) the DDP step consumed
    model = _model()
    Trainer(model, UnionSampler(4), _collate, _train_config(), tmp_path / "one").train()
    one = _params(tmp_path / "one" / "checkpoints" / f"step_{STEPS:08d}.pt")
    start = _model().state_dict()
    assert ddp.keys() == one.keys()
    moved = max(float((one[k] - start[k]).abs().max()) for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # training happened
    for k in one:
        a, b = ddp[k], one[k]
        if k.endswith("self_attn.in_proj_bias"):
            # the key bias has a zero gradient in exact arithmetic (softmax ignores a constant shift);
            # AdamW scales its rounding noise up to steps of +-lr, which differ between the two runs
            d = a.shape[0] // 3
            keep = torch.cat([torch.arange(d), torch.arange(2 * d, 3 * d)])
            a, b = a[keep], b[keep]
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4, msg=k)
    # the logged loss is the mean over ranks, i.e. the union batch's loss
    rows = [line.split(",") for line in (tmp_path / "ddp" / "train_log.csv").read_text().splitlines()]
    rows1 = [line.split(",") for line in (tmp_path / "one" / "train_log.csv").read_text().splitlines()]
    col = rows[0].index("loss")
    assert rows[0] == rows1[0] and len(rows) == len(rows1) == STEPS + 1
    for a, b in zip(rows[1:], rows1[1:]):
        assert abs(float(a[col]) - float(b[col])) < 1e-4, (a, b)


# ---- `asr train` under torchrun: resume after a kill -----------------------------------------------
@pytest.fixture(scope="module")
def dump_dir(tmp_path_factory) -> Path:
    from asr.io_utils import write_table
    from asr.tokenizer import train_tokenizer

    d = tmp_path_factory.mktemp("dump")
    rng = np.random.default_rng(0)
    words = "the cat sat on a mat dog ran far blue sky sun was hot cold wind".split()
    texts, frames = {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
        for i in range(20):
            utt = f"spk0-{i:03d}"
            n = int(rng.integers(60, 120))
            w(utt, rng.standard_normal((n, FEAT_DIM)).astype(np.float32))
            texts[utt], frames[utt] = " ".join(rng.choice(words, size=rng.integers(2, 5))), str(n)
    write_table(d / "text", texts)
    write_table(d / "utt2num_frames", frames)
    (d / "feat_info.json").write_text(json.dumps({"feature_type": "fbank", "dim": FEAT_DIM, "frame_rate_hz": 100.0}))
    train_tokenizer(d / "text", d / "tok", vocab_size=30, model_type="bpe")
    return d


def _cli_config(path: Path) -> Path:
    # dropout and SpecAugment on: an exact resume must restore every rank's own RNG state
    path.write_text("""
model: {encoder_type: frozen, frozen_pool: 2, frozen_layers: 1, frozen_layer_type: transformer,
         conformer: {d_model: 16, num_layers: 1, num_heads: 2, ffn_dim: 32},
         d_model: 16, cformer_layers: 1, cformer_heads: 2, cformer_ffn: 32, dropout: 0.1,
         specaug: {time_masks: 1, time_mask_max: 10, freq_masks: 1, freq_mask_max: 3}}
train: {max_epochs: 50, lr: 0.003, warmup_steps: 3, max_frames_per_batch: 250, checkpoint_interval: 3,
        keep_checkpoints: 10, log_interval: 1, num_threads: 1, seed: 5, device: cpu}
""")
    return path


def _cli_train(dump: Path, exp: Path, config: Path, steps: int) -> subprocess.CompletedProcess:
    return torchrun(
        "-m",
        "asr.cli.main",
        "train",
        "--config",
        str(config),
        "--train-dir",
        str(dump),
        "--valid-dir",
        str(dump),
        "--tokenizer",
        str(dump / "tok.model"),
        "--exp-dir",
        str(exp),
        "--max-steps",
        str(steps),
    )


@pytest.mark.slow
def test_asr_train_under_torchrun_resumes_exactly(dump_dir, tmp_path):
    """`asr train` under torchrun (2 ranks, gloo); then the same experiment cut back to a mid-epoch
    checkpoint (as a kill leaves it: later checkpoints, log rows and model dirs gone) and rerun ends
    with the same parameters. (The kill itself, os._exit between checkpoints, is test_training's.)"""
    import shutil

    steps = 8
    full = _cli_train(dump_dir, tmp_path / "full", _cli_config(tmp_path / "a.yaml"), steps)
    assert full.returncode == 0, full.stderr[-3000:]
    assert full.stdout.count("model written to") == 1  # rank 0 reports
    log_full = (tmp_path / "full" / "train_log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log_full[1:]] == [str(s) for s in range(1, steps + 1)]  # rank 0 alone logs
    state = torch.load(tmp_path / "full" / "checkpoints" / "step_00000003.pt", weights_only=False)
    assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])  # ranks drew differently
    assert state["batch_in_epoch"] > 0 and state["batch_in_epoch"] % 2 == 0  # mid-epoch, counted in global batches

    cut = tmp_path / "cut"
    shutil.copytree(tmp_path / "full", cut)
    for ckpt in (cut / "checkpoints").glob("step_*.pt"):
        if ckpt.name != "step_00000003.pt":
            ckpt.unlink()
    for d in ("final", "best"):
        shutil.rmtree(cut / d, ignore_errors=True)
    resumed = _cli_train(dump_dir, cut, _cli_config(tmp_path / "b.yaml"), steps)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "step 3" in resumed.stderr
    a = torch.load(tmp_path / "full" / "checkpoints" / f"step_{steps:08d}.pt", weights_only=False)
    b = torch.load(cut / "checkpoints" / f"step_{steps:08d}.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] and a["batch_in_epoch"] == b["batch_in_epoch"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert (cut / "train_log.csv").read_text().count("\n") == len(log_full)  # rows after step 3 rewritten once
    assert (cut / "final" / "model.safetensors").exists()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        sys.exit("usage: torchrun --nproc_per_node 2 tests/test_distributed.py --worker OUT_DIR")
