"""A tiny end-to-end run of recipes/mini: stages 0-4 on a few utterances with a tiny model.

The recipe is copied into a temp dir and run exactly as a user runs it (``./run.sh``), with a
tiny corpus config and a tiny Conformer config; every stage's outputs are checked.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import pytest

from asr.data.datadir import read_table, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mini"

TINY_CORPUS = """\
seed: 11
sentences:
  sources: {harvard: 40}
  test_percent: 20
  dev_percent: 15
train:
  num_utts: 24
  voices: [espeak:en-us+m3, espeak:en+f2, flite:awb]
dev:
  num_utts: 4
test_unseen:
  num_utts: 4
  voices: [flite:kal16, espeak:en-us+m7]
test_real:
  sources: [cards, alsa]
augment:
  fraction: 0.25
  babble_talkers: [2, 3]
"""

TINY_MODEL = """\
features: {type: fbank, options: {num_mel_bins: 40}}
tokenizer: {model_type: char, vocab_size: 30}
model:
  encoder_type: conformer
  conformer: {d_model: 32, num_layers: 1, num_heads: 2, ffn_dim: 64, kernel_size: 5, subsampling_channels: 8}
  d_model: 32
  cformer_layers: 1
  cformer_heads: 2
  cformer_ffn: 64
train: {max_epochs: 2, max_steps: 6, lr: 0.002, warmup_steps: 2, max_frames_per_batch: 3000, checkpoint_interval: 3, log_interval: 1}
"""


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    if not shutil.which("espeak-ng") or not shutil.which("flite"):
        pytest.skip("needs espeak-ng and flite (Debian)")
    work = tmp_path_factory.mktemp("mini")
    for name in ("run.sh", "path.sh", "utils", "local", "conf"):
        src = RECIPE / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    (work / "conf" / "tiny_corpus.yaml").write_text(TINY_CORPUS)
    (work / "conf" / "tiny.yaml").write_text(TINY_MODEL)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = ["bash", "run.sh", "--nj", "2", "--corpus-config", "conf/tiny_corpus.yaml", "--config", "conf/tiny.yaml"]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc


def test_stage0_data_dirs(recipe_run):
    work, _ = recipe_run
    for s in ("train", "dev", "test_unseen", "test_real"):
        assert validate_data_dir(work / "data" / s) > 0
    train_spk = set(read_table(work / "data/train/utt2spk").values())
    test_spk = set(read_table(work / "data/test_unseen/utt2spk").values())
    assert not train_spk & test_spk


def test_stage1_features(recipe_run):
    work, _ = recipe_run
    for s in ("train", "dev", "test_unseen", "test_real"):
        dump = work / "dump" / "fbank" / s
        feats = read_table(dump / "feats.scp")
        frames = read_table(dump / "utt2num_frames")
        assert feats and set(feats) == set(frames)
        for utt, ref in list(feats.items())[:3]:
            mat = kaldiio.load_mat(ref)
            assert mat.shape == (int(frames[utt]), 40)
        assert json.loads((dump / "feat_info.json").read_text())["dim"] == 40
    assert (work / "dump/fbank/train/cmvn.ark").stat().st_size > 0


def test_stage2_tokenizer(recipe_run):
    work, _ = recipe_run
    assert (work / "exp/tiny/tokenizer/units.model").exists()
    vocab = (work / "exp/tiny/tokenizer/units.vocab").read_text().split("\n")
    assert vocab[0].startswith("<blank> 0")


def test_stage3_training_outputs(recipe_run):
    work, _ = recipe_run
    exp = work / "exp/tiny"
    assert (exp / "checkpoints/step_00000006.pt").exists()
    rows = (exp / "train_log.csv").read_text().strip().split("\n")
    assert rows[0].startswith("step,epoch,lr") and len(rows) == 7
    assert (exp / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("config.json", "model.pt", "tokenizer.model", "feat_info.json"):
        assert (exp / "final" / name).exists(), name


def test_stage4_decode_and_score(recipe_run):
    work, proc = recipe_run
    exp = work / "exp/tiny"
    for s in ("dev", "test_unseen", "test_real"):
        d = exp / f"decode_cif_{s}"
        hyp, ref = read_table(d / "hyp", allow_empty_value=True), read_table(d / "ref")
        assert set(hyp) <= set(ref) and hyp
        result = (d / "result.txt").read_text()
        assert "Sum/Avg" in result and "REF:" in result and "HYP:" in result
        assert (d / "wer").read_text().startswith("%WER ")
        info = json.loads((d / "decode_info.json").read_text())
        assert info["num_utts"] == len(hyp) and info["rtf"] > 0
    table = (exp / "RESULTS.md").read_text()
    for s in ("dev", "test_unseen", "test_real"):
        assert f"decode_cif_{s}" in table
    assert "WER" in table and "WER" in proc.stdout
