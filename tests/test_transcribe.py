"""`asr transcribe` with a stage-1 model dir: outputs per file, token times, bad files skipped."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asr.data.datadir import read_table
from asr.models.cif_asr import CifAsrConfig, CifAsrModel
from asr.models.conformer_encoder import ConformerConfig
from asr.tokenizer import Tokenizer, train_tokenizer
from asr.training.train_cif import finalize_model_dir


@pytest.fixture(scope="module")
def model_dir(espeak_dir, tmp_path_factory) -> Path:
    """A randomly initialised fbank model dir (transcripts are noise; the plumbing is what is tested)."""
    root = tmp_path_factory.mktemp("model")
    tok = Tokenizer(train_tokenizer(espeak_dir / "text", root / "units", vocab_size=30, model_type="char"))
    torch.manual_seed(0)
    cfg = CifAsrConfig(vocab_size=len(tok), feat_dim=80, d_model=32, cformer_layers=1, cformer_heads=2, cformer_ffn=64,
                       conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, kernel_size=5, subsampling_channels=8))
    model = CifAsrModel(cfg)  # random alphas are near 0.5: CIF fires about every other frame
    model.save_pretrained(root / "final")
    finalize_model_dir(root / "final", tok, {"feature_type": "fbank", "options": {}, "dim": 80, "frame_rate_hz": 100.0})
    return root / "final"


def _asr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "asr"), *map(str, args)], capture_output=True, text=True)


def test_transcribe_files_and_skip_bad_one(model_dir, espeak_dir, tmp_path):
    wavs = [p for p in read_table(espeak_dir / "wav.scp").values() if not p.endswith("|")][:2]
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    out = tmp_path / "out"
    proc = _asr("transcribe", "--model", model_dir, "-o", out, "-f", "all", wavs[0], bad, wavs[1])
    assert proc.returncode == 1  # something failed, and the exit status says so
    assert "broken.wav: skipped" in proc.stderr and "1 of 3 file(s) failed" in proc.stderr
    for wav in wavs:
        stem = Path(wav).stem
        assert (out / f"{stem}.txt").exists()
        doc = json.loads((out / f"{stem}.json").read_text())
        times = [t["time"] for t in doc["tokens"]]
        assert times == sorted(times) and all(0 < t <= doc["duration"] + 1e-3 for t in times)
        assert doc["text"] == (out / f"{stem}.txt").read_text().strip()
    assert not (out / "broken.txt").exists()


def test_transcribe_all_good_exits_zero(model_dir, espeak_dir, tmp_path):
    wav = next(p for p in read_table(espeak_dir / "wav.scp").values() if not p.endswith("|"))
    proc = _asr("transcribe", "--model", model_dir, "-o", tmp_path, wav)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / f"{Path(wav).stem}.txt").exists()
