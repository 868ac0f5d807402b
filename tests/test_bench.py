"""``python -m bench.run`` end to end on a tiny setup: 3 espeak-ng utterances, 1 training step per config,
and a tiny randomly initialized model dir (weights, tokenizer, feat_info) standing in for a trained one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_stage1

from asr.io_utils import write_table
from asr.tokenizer import Tokenizer, train_tokenizer
from asr.training.train_cif import finalize_model_dir

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # bench/ is a folder of the repository, not part of the installed package
    sys.path.insert(0, str(REPO))

from bench.run import NO_MODEL, render_markdown  # noqa: E402

TAGS = ("cformer_whisper_quick", "cformer_conformer")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, espeak_dir) -> Path:
    """A model dir as ``asr train`` leaves it (config.json, model.safetensors, tokenizer.model, feat_info.json), untrained."""
    root = tmp_path_factory.mktemp("bench_model")
    # enough text for a 40-unit BPE model: the data dir's transcripts plus a few more sentences
    texts = dict(line.split(" ", 1) for line in (espeak_dir / "text").read_text().splitlines())
    extra = ["the cat sat on the mat", "a dog ran far in the cold wind", "blue sky and hot sun", "seven of hearts"]
    texts.update({f"x{i}": t for i, t in enumerate(extra)})
    write_table(root / "text", texts)
    tokenizer = Tokenizer(train_tokenizer(root / "text", root / "tok" / "units", vocab_size=40))
    model_dir = root / "final"
    tiny_stage1(tokenizer, feat_dim=384).save_pretrained(model_dir)
    feat_info = {
        "feature_type": "whisper_encoder",
        "options": {"model": "packaged", "pool": 1},
        "dim": 384,
        "frame_rate_hz": 50.0,
        "num_utts": 3,
        "num_bad": 0,
    }
    finalize_model_dir(model_dir, tokenizer, feat_info)
    return model_dir


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory, espeak_dir, tiny_model_dir) -> Path:
    out = tmp_path_factory.mktemp("bench_out")
    cmd = [
        sys.executable,
        "-m",
        "bench.run",
        "--out",
        str(out),
        "--data-dir",
        str(espeak_dir),
        "--num-utts",
        "3",
        "--train-steps",
        "1",
        "--warmup-steps",
        "1",
        "--model-dir",
        str(tiny_model_dir),
        "--threads",
        "1",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0


@pytest.mark.slow
def test_bench_json_has_every_field(bench_out):
    res = json.loads((bench_out / "bench.json").read_text())
    assert res["schema"] == "xllm-asr-bench/1" and res["date"]
    m = res["machine"]
    assert m["cpu_model"] and _positive(m["cpu_cores"]) and m["torch_threads"] == 1
    assert res["inputs"]["num_utts"] == 3 and _positive(res["inputs"]["audio_seconds"])

    for ftype in ("fbank", "whisper_encoder"):
        r = res["feature_extraction"][ftype]
        assert r["num_utts"] == 3
        for key in ("audio_seconds", "wall_seconds", "x_real_time", "dim", "frame_rate_hz", "frames"):
            assert _positive(r[key]), (ftype, key, r[key])
    assert res["feature_extraction"]["fbank"]["frame_rate_hz"] == 100.0
    assert res["feature_extraction"]["whisper_encoder"]["frame_rate_hz"] == 50.0

    assert set(res["training"]) == set(TAGS) == set(res["decoding"])
    for tag in TAGS:
        t = res["training"][tag]
        # FeatureDataset drops utterances with more tokens than CIF frames (the tiny test tokenizer makes many)
        assert t["timed_steps"] == 1 and 1 <= t["num_utts"] <= 3
        for key in (
            "utterances_per_second",
            "frames_per_second",
            "audio_seconds_per_second",
            "seconds_per_step",
            "mean_batch_size",
            "trainable_params_millions",
            "max_frames_per_batch",
        ):
            assert _positive(t[key]), (tag, key, t[key])
        d = res["decoding"][tag]
        kinds = ("cached_features", "end_to_end") if tag == "cformer_whisper_quick" else ("cached_features",)
        assert set(d) >= set(kinds)
        for kind in kinds:
            assert d[kind]["batch_size_1"]["batches"] == 3
            for layout in ("batched", "batch_size_1"):
                for key in ("decode_seconds", "rtf"):
                    assert _positive(d[kind][layout][key]), (tag, kind, layout, key)
    assert "end_to_end" not in res["decoding"]["cformer_conformer"]  # no frozen encoder to run

    c = res["cif_compression"]
    assert c["feature_type"] == "whisper_encoder" and c["num_utts"] == 3
    for key in (
        "cif_vectors_per_second",
        "encoder_frames_per_second",
        "native_frames_per_second",
        "encoder_frames_per_cif_vector",
        "native_frames_per_cif_vector",
        "reference_tokens_per_second",
        "decode_rtf_cached_batched",
    ):
        assert _positive(c[key]), (key, c[key])
    # an untrained model rarely gets the count right: a share in [0, 1], a difference >= 0
    assert 0.0 <= c["token_count_match_share"] <= 1.0 and c["token_count_mean_abs_diff"] >= 0.0
    # Whisper: 50 native frames/s, pooled by 2 before CIF
    assert 45 < c["native_frames_per_second"] <= 51
    assert c["encoder_frames_per_second"] == pytest.approx(c["native_frames_per_second"] / 2, rel=0.05)


@pytest.mark.slow
def test_bench_markdown_table(bench_out):
    md = (bench_out / "bench.md").read_text()
    res = json.loads((bench_out / "bench.json").read_text())
    assert "| section | metric | value | unit |" in md and "|---|---|---:|---|" in md
    assert res["date"] in md and res["machine"]["cpu_model"] in md and "torch threads 1" in md
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert all(line.count("|") == 5 for line in rows), rows  # 4 cells, no stray pipes
    for needle in ("x real time", "utterances/s", "input frames/s", "RTF (decode s / audio s)", "CIF vectors / s of audio"):
        assert needle in md
    assert NO_MODEL not in md


@pytest.mark.slow
def test_markdown_without_trained_model(bench_out):
    res = json.loads((bench_out / "bench.json").read_text())
    res["cif_compression"] = {"status": NO_MODEL}
    md = render_markdown(res)
    rows = [line for line in md.splitlines() if line.startswith("| CIF compression |")]
    assert len(rows) == 9 and all(f"| {NO_MODEL} |" in line for line in rows)


def test_help():
    proc = subprocess.run([sys.executable, "-m", "bench.run", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for option in ("--data-dir", "--num-utts", "--train-steps", "--model-dir", "--out"):
        assert option in proc.stdout
