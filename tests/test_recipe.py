"""A tiny end-to-end run of recipes/mini: stages 0-7 on a few utterances with tiny models.

The recipe is copied into a temp dir and run exactly as a user runs it (``./run.sh``), with a
tiny corpus config, a tiny Conformer stage-1 config whose units are the tiny GLM's tokens, and a
stage-2 config with the tiny random GLM; every stage's outputs are checked.
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

pytestmark = pytest.mark.slow  # every test here reads one run of the whole recipe

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
test_real_ivr:
  sources: [ivr]
  max_utts: 3
augment:
  fraction: 0.25
  babble_talkers: [2, 3]
"""

TINY_MODEL = """\
features: {type: fbank, options: {num_mel_bins: 40}}
tokenizer: {model_type: llm, llm: tiny-glm}
model:
  classifier: tied
  encoder_type: conformer
  conformer: {d_model: 32, num_layers: 1, num_heads: 2, ffn_dim: 64, kernel_size: 5, subsampling_channels: 8}
  d_model: 32
  cformer_layers: 1
  cformer_heads: 2
  cformer_ffn: 64
train: {max_epochs: 2, max_steps: 6, lr: 0.002, warmup_steps: 2, max_frames_per_batch: 3000, checkpoint_interval: 3, log_interval: 1}
"""

TINY_LLM = """\
speech_llm:
  llm: {name_or_path: tiny-glm}
  adapter: {mode: expected_embedding, hidden_dim: 32}
train: {max_epochs: 1, max_steps: 3, lr: 0.002, warmup_steps: 1, max_frames_per_batch: 3000, checkpoint_interval: 2, log_interval: 1}
decode: {beam_size: 2, batch_size: 4}
"""


@pytest.fixture(scope="module")
def recipe_run(tmp_path_factory):
    if not shutil.which("espeak-ng") or not shutil.which("flite"):
        pytest.skip("needs espeak-ng and flite (Debian)")
    work = tmp_path_factory.mktemp("mini")
    for name in ("run.sh", "asr.sh", "path.sh", "utils", "local", "conf"):
        src = RECIPE / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / name)
    (work / "conf" / "tiny_corpus.yaml").write_text(TINY_CORPUS)
    (work / "conf" / "tiny.yaml").write_text(TINY_MODEL)
    (work / "conf" / "tiny_llm.yaml").write_text(TINY_LLM)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [
        "bash",
        "run.sh",
        "--nj",
        "2",
        "--corpus-config",
        "conf/tiny_corpus.yaml",
        "--config",
        "conf/tiny.yaml",
        "--llm-config",
        "conf/tiny_llm.yaml",
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return work, proc


def test_stage0_data_dirs(recipe_run):
    work, _ = recipe_run
    for s in ("train", "dev", "test_unseen", "test_real", "test_real_ivr"):
        assert validate_data_dir(work / "data" / s) > 0
    assert len(read_table(work / "data/test_real_ivr/text")) == 3  # max_utts
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
    units = json.loads((work / "exp/tiny/tokenizer/units.llm/units.json").read_text())
    assert units["llm"] == "tiny-glm" and units["llm_ids"] == sorted(set(units["llm_ids"]))
    assert (work / "exp/tiny/tokenizer/units.llm/llm_tokenizer").is_dir()


def test_stage3_training_outputs(recipe_run):
    work, _ = recipe_run
    exp = work / "exp/tiny"
    assert (exp / "checkpoints/step_00000006.pt").exists()
    rows = (exp / "train_log.csv").read_text().strip().split("\n")
    assert rows[0].startswith("step,epoch,lr") and len(rows) == 7
    assert (exp / "curves.png").read_bytes()[:4] == b"\x89PNG"
    for name in ("config.json", "model.safetensors", "tokenizer.llm", "feat_info.json"):
        assert (exp / "final" / name).exists(), name


def test_stage4_decode_and_score(recipe_run):
    work, proc = recipe_run
    exp = work / "exp/tiny"
    for s in ("dev", "test_unseen", "test_real", "test_real_ivr"):
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


def test_stages5_to_7_llm_training_decoding_scoring_export(recipe_run):
    work, _ = recipe_run
    llm_exp = work / "exp/tiny/tiny_llm"
    assert {p.name for p in (llm_exp / "final").iterdir()} >= {"adapter.safetensors", "speech_llm.json", "stage1.json"}
    assert len((llm_exp / "train_log.csv").read_text().strip().split("\n")) == 4  # header + 3 steps
    table = (work / "exp/tiny/RESULTS.md").read_text()
    for s in ("dev", "test_unseen", "test_real"):
        d = llm_exp / f"decode_llm_{s}"
        hyp, ref = read_table(d / "hyp", allow_empty_value=True), read_table(d / "ref")
        assert hyp and set(hyp) <= set(ref)
        assert (d / "wer").read_text().startswith("%WER ")
        info = json.loads((d / "decode_info.json").read_text())
        assert info["beam_size"] == 2 and info["llm_positions_per_second"] > 0
        assert f"decode_cif_{s}" in table and f"decode_llm_{s}" in table  # both decoders side by side
    exported = work / "exp/tiny/model"
    assert json.loads((exported / "export.json").read_text())["kind"] == "speech_llm"
    assert (exported / "stage1" / "model.safetensors").exists()
