"""A resumed run must start from the same input models as the run that wrote its checkpoints."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from asr.data.batching import FrameBatchSampler
from asr.io_utils import save_config_and_weights
from asr.training.started_from import weights_digest
from asr.training.trainer import TrainConfig, Trainer


class Regression(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(3, 1)

    def forward(self, x, y):
        return {"loss": ((self.linear(x).squeeze(-1) - y) ** 2).mean()}


def collate(indices):
    g = torch.Generator().manual_seed(sum(indices))
    x = torch.randn(len(indices), 3, generator=g)
    return {"x": x, "y": x.sum(-1)}


def _model_dir(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_config_and_weights(path, "config.json", {"seed": seed}, "model.pt", torch.nn.Linear(4, 4).state_dict())
    return path


def _run(exp: Path, started_from: dict, max_steps: int):
    cfg = TrainConfig(
        max_steps=max_steps,
        max_epochs=100,
        lr=1e-2,
        warmup_steps=1,
        checkpoint_interval=2,
        log_interval=1,
        num_threads=1,
        device="cpu",
    )
    trainer = Trainer(Regression(), FrameBatchSampler([10] * 8, 20, seed=1), collate, cfg, exp, started_from=started_from)
    trainer.train()
    return trainer


def test_weights_digest_follows_tensors_not_file_bytes(tmp_path):
    a = _model_dir(tmp_path / "a", seed=1)
    state = torch.load(a / "model.pt", weights_only=True)
    torch.save(state, tmp_path / "x.pt")  # the same tensors saved again (the archive name differs)
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "x.pt", tmp_path / "b" / "model.pt")
    assert (tmp_path / "b" / "model.pt").read_bytes() != (a / "model.pt").read_bytes()
    assert weights_digest(tmp_path / "b") == weights_digest(a)
    shutil.copytree(a, tmp_path / "moved")
    (tmp_path / "moved" / "config.json").write_text('{"path": "elsewhere"}')  # configs are not weights
    assert weights_digest(tmp_path / "moved") == weights_digest(a)
    state["weight"][0, 0] += 1e-3
    torch.save(state, tmp_path / "b" / "model.pt")
    assert weights_digest(tmp_path / "b") != weights_digest(a)
    tok = tmp_path / "tok.model"  # a file that is not weights: by its bytes
    tok.write_bytes(b"abc")
    before = weights_digest(tok)
    tok.write_bytes(b"abd")
    assert weights_digest(tok) != before
    with pytest.raises(FileNotFoundError, match="missing"):
        weights_digest(tmp_path / "missing")


def test_resume_from_other_input_models_is_refused(tmp_path):
    first, other = _model_dir(tmp_path / "first", 1), _model_dir(tmp_path / "other", 2)
    exp = tmp_path / "exp"
    _run(exp, {"image model": first}, max_steps=4)
    ckpt = torch.load(exp / "checkpoints" / "step_00000004.pt", weights_only=False)
    assert ckpt["started_from"]["image model"]["path"] == str(first.resolve())
    with pytest.raises(ValueError) as err:
        _run(exp, {"image model": other}, max_steps=6)
    msg = str(err.value)
    assert "step_00000004.pt" in msg and "image model" in msg and str(first.resolve()) in msg and str(other.resolve()) in msg
    assert not (exp / "checkpoints" / "step_00000006.pt").exists()
    _run(tmp_path / "exp_none", {"image model": None}, max_steps=2)
    with pytest.raises(ValueError, match="started from nothing"):  # started without it, now with it
        _run(tmp_path / "exp_none", {"image model": first}, max_steps=4)
    # the same weights elsewhere (a copied tree, another machine) are the same input: the run resumes
    shutil.copytree(first, tmp_path / "copy")
    trainer = _run(exp, {"image model": tmp_path / "copy"}, max_steps=6)
    assert trainer.step == 6 and (exp / "checkpoints" / "step_00000006.pt").exists()
    # checkpoints that did not record an input (written before inputs were recorded) resume
    state = torch.load(exp / "checkpoints" / "step_00000006.pt", weights_only=False)
    del state["started_from"]
    torch.save(state, exp / "checkpoints" / "step_00000006.pt")
    assert _run(exp, {"image model": other}, max_steps=8).step == 8
