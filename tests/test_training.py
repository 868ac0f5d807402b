"""Stage-1 model and trainer: shapes, loss, decoding, and exact resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch

from asr.data.batching import IGNORE_ID
from asr.io_utils import write_table
from asr.models.cif_asr import CifAsrConfig, CifAsrModel
from asr.models.conformer_encoder import ConformerConfig
from asr.tokenizer import train_tokenizer

WORDS = "the cat sat on a mat dog ran far blue sky sun was hot cold wind".split()


def tiny_config(**over) -> CifAsrConfig:
    cfg = dict(
        vocab_size=30,
        feat_dim=20,
        d_model=32,
        cformer_layers=1,
        cformer_heads=2,
        cformer_ffn=64,
        dropout=0.1,
        conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, kernel_size=5, subsampling_channels=8),
    )
    cfg.update(over)
    return CifAsrConfig(**cfg)


@pytest.fixture(scope="module")
def dump_dir(tmp_path_factory) -> Path:
    """A dump dir of random 20-dim 'features' with transcripts, plus a tokenizer trained on them."""
    d = tmp_path_factory.mktemp("dump")
    rng = np.random.default_rng(0)
    texts, utt2spk, frames = {}, {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
        for i in range(24):
            utt = f"spk{i // 12}-{i:03d}"
            words = rng.choice(WORDS, size=rng.integers(2, 6))
            n = int(rng.integers(80, 160))
            w(utt, rng.standard_normal((n, 20)).astype(np.float32))
            texts[utt], utt2spk[utt], frames[utt] = " ".join(words), f"spk{i // 12}", str(n)
    write_table(d / "text", texts)
    write_table(d / "utt2spk", utt2spk)
    write_table(d / "utt2num_frames", frames)
    (d / "feat_info.json").write_text(json.dumps({"feature_type": "fbank", "dim": 20, "frame_rate_hz": 100.0}))
    train_tokenizer(d / "text", d / "tok", vocab_size=30, model_type="bpe")
    return d


def test_forward_shapes_and_loss():
    torch.manual_seed(0)
    model = CifAsrModel(tiny_config())
    feats = torch.randn(3, 120, 20)
    lengths = torch.tensor([120, 100, 60])
    targets = torch.full((3, 5), IGNORE_ID)
    tlen = torch.tensor([5, 3, 2])
    for b, n in enumerate(tlen):
        targets[b, :n] = torch.randint(1, 30, (int(n),))
    out = model(feats, lengths, targets, tlen)
    assert set(out) >= {"loss", "ce", "quantity", "ctc", "acc"}
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert model.cif.parameters().__next__().grad is not None
    assert model.classifier.weight.grad.abs().sum() > 0
    model.eval()
    result = model.recognize(feats, lengths)
    assert len(result["tokens"]) == 3
    for toks, fires, n_frames in zip(result["tokens"], result["fire_frames"], result["frame_lengths"]):
        assert len(toks) == len(fires)
        assert fires == sorted(fires) and all(0 <= f < n_frames for f in fires)


@pytest.mark.parametrize(
    "over",
    [
        {},  # Conformer trained from scratch (conv subsampling)
        {"encoder_type": "frozen", "frozen_pool": 4, "frozen_pool_mode": "stack"},
        {"encoder_type": "frozen", "frozen_pool": 2, "frozen_layers": 1, "frozen_layer_type": "conformer"},
        {
            "encoder_type": "frozen",
            "frozen_pool": 2,
            "frozen_pool_mode": "stack",
            "frozen_layers": 1,
            "frozen_layer_type": "transformer",
        },
    ],
)
def test_batched_recognition_equals_single(over):
    torch.manual_seed(0)
    model = CifAsrModel(tiny_config(**over)).eval()
    feats = torch.randn(3, 150, 20)
    lengths = torch.tensor([150, 90, 120])
    batch = model.recognize(feats, lengths)
    for b in range(3):
        single = model.recognize(feats[b : b + 1, : lengths[b]], lengths[b : b + 1])
        assert single["tokens"][0] == batch["tokens"][b]
        assert single["fire_frames"][0] == batch["fire_frames"][b]


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = CifAsrModel(tiny_config(encoder_type="frozen", frozen_pool=2)).eval()
    model.save_pretrained(tmp_path / "m")
    again = CifAsrModel.from_pretrained(tmp_path / "m")
    feats, lengths = torch.randn(2, 80, 20), torch.tensor([80, 50])
    assert again.recognize(feats, lengths)["tokens"] == model.recognize(feats, lengths)["tokens"]
    for (k, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), k


def _train(
    dump: Path, exp: Path, config: Path, max_steps: int, extra: list[str] = (), kill_at: int = 0
) -> subprocess.CompletedProcess:
    """``asr train`` in a subprocess; with ``kill_at`` it is killed at that step (tests/kill_training.py)."""
    launcher = [str(Path(__file__).parent / "kill_training.py"), str(kill_at)] if kill_at else ["-m", "asr.cli.main"]
    cmd = [
        sys.executable,
        *launcher,
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
        str(max_steps),
        *extra,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})


def _write_config(path: Path) -> Path:
    path.write_text("""
model:
  encoder_type: conformer
  conformer: {d_model: 32, num_layers: 1, num_heads: 2, ffn_dim: 64, kernel_size: 5, subsampling_channels: 8}
  d_model: 32
  cformer_layers: 1
  cformer_heads: 2
  cformer_ffn: 64
  dropout: 0.1
train: {max_epochs: 50, lr: 0.002, warmup_steps: 5, max_frames_per_batch: 700, checkpoint_interval: 4,
        log_interval: 2, num_threads: 1, seed: 7}
""")
    return path


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(dump_dir, tmp_path):
    """Kill training between checkpoints, rerun: the next checkpoint equals an uninterrupted run's.

    The kill lands mid-epoch (the sampler makes several batches per epoch), so this also checks that
    the position inside the epoch and every RNG (dropout, SpecAugment) are restored.
    """
    steps = 12
    full = _train(dump_dir, tmp_path / "full", _write_config(tmp_path / "a.yaml"), steps)
    assert full.returncode == 0, full.stderr[-2000:]
    killed = _train(dump_dir, tmp_path / "resumed", _write_config(tmp_path / "b.yaml"), steps, kill_at=9)
    assert killed.returncode == 3, killed.stderr[-2000:]  # exited abruptly at step 10 (the log row after step 9)
    ckpts = sorted((tmp_path / "resumed" / "checkpoints").glob("step_*.pt"))
    assert ckpts[-1].name == "step_00000008.pt"
    assert torch.load(ckpts[-1], weights_only=False)["batch_in_epoch"] > 0  # the resume point is mid-epoch
    resumed = _train(dump_dir, tmp_path / "resumed", _write_config(tmp_path / "c.yaml"), steps)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stderr
    a = torch.load(tmp_path / "full" / "checkpoints" / f"step_{steps:08d}.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "checkpoints" / f"step_{steps:08d}.pt", weights_only=False)
    assert a["epoch"] == b["epoch"] and a["batch_in_epoch"] == b["batch_in_epoch"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    # the logs hold each step once, as in the uninterrupted run
    assert (tmp_path / "full" / "train_log.csv").read_text().count("\n") == (
        tmp_path / "resumed" / "train_log.csv"
    ).read_text().count("\n")
    assert (tmp_path / "resumed" / "curves.png").stat().st_size > 1000
    # stopped by max_steps inside an epoch: validated at that step too, so best/ and final/ see the last steps
    logs = {run: (tmp_path / run / "valid_log.csv").read_text().splitlines() for run in ("full", "resumed")}
    assert [r.split(",")[0] for r in logs["full"][1:]] == [r.split(",")[0] for r in logs["resumed"][1:]]
    assert logs["full"][-1].split(",")[0] == str(steps)
    again = _train(dump_dir, tmp_path / "full", _write_config(tmp_path / "a.yaml"), steps)  # nothing left to do
    assert again.returncode == 0 and (tmp_path / "full" / "valid_log.csv").read_text().splitlines() == logs["full"]
    assert (tmp_path / "resumed" / "final" / "tokenizer.model").exists()
