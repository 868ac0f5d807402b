"""Tests for asr.features: Kaldi fbank (vs kaldi-native-fbank), make_features (ark/scp, nj, bad audio,
resume) and global CMVN."""

from __future__ import annotations

import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import BAD_UTTS, ESPEAK_UTTS

from asr.data.audio import read_audio
from asr.data.datadir import DataDir, read_table, validate_data_dir
from asr.features.cmvn import compute_cmvn_stats, read_cmvn_stats, write_cmvn_stats
from asr.features.extractors import FbankExtractor, build_extractor
from asr.features.make_feats import make_features
from asr.models.cmvn import GlobalCMVN

SPEECH_DIR = Path("/usr/share/pocketsphinx/test/data")
SPEECH = sorted(SPEECH_DIR.glob("librivox/*.wav")) + sorted(SPEECH_DIR.glob("cards/*.wav"))
GOOD_UTTS = sorted(u for u, *_ in ESPEAK_UTTS)


def _expected_frames(num_samples: int) -> int:
    # Kaldi snip_edges=true: 25 ms windows (400 samples) every 10 ms (160 samples)
    return 1 + (num_samples - 400) // 160


def _load(scp: Path) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in kaldiio.load_scp(str(scp)).items()}


# ------------------------------------------------------------------------------------------------
# fbank vs kaldi-native-fbank
# ------------------------------------------------------------------------------------------------
@pytest.mark.skipif(not SPEECH, reason="pocketsphinx test data not installed")
def test_fbank_matches_kaldi_native_fbank_on_real_speech():
    knf = pytest.importorskip("kaldi_native_fbank")
    extractor = FbankExtractor()
    assert extractor.dim == 80 and extractor.frame_rate_hz == 100.0
    worst, total, count = 0.0, 0.0, 0
    for path in SPEECH:
        wave, rate = read_audio(path)
        ours = extractor(wave)
        opts = knf.FbankOptions()
        opts.frame_opts.dither = 0.0
        opts.frame_opts.snip_edges = True
        opts.frame_opts.samp_freq = 16000
        opts.mel_opts.num_bins = 80
        opts.energy_floor = 0.0
        fb = knf.OnlineFbank(opts)
        fb.accept_waveform(16000, (wave.numpy() * 32768.0).tolist())  # int16 scale, as our extractor
        fb.input_finished()
        ref = np.stack([np.asarray(fb.get_frame(i)) for i in range(fb.num_frames_ready)])
        assert ours.dtype == np.float32
        assert ours.shape == ref.shape == (_expected_frames(wave.shape[0]), 80), path
        diff = np.abs(ours - ref)
        # measured here: max 1.35e-3 (a low-energy bin, log value ~4.0, of librivox -0870), mean ~7e-6
        assert diff.max() < 2e-3, (path, diff.max())
        assert np.quantile(diff, 0.999) < 2e-4, path
        worst = max(worst, float(diff.max()))
        total += float(diff.sum())
        count += diff.size
    assert total / count < 2e-5
    assert worst > 0  # two independent implementations: exact equality would mean we compared one with itself


def test_fbank_frame_count_and_determinism():
    gen = torch.Generator().manual_seed(0)
    wave = 0.1 * torch.randn(16000 + 123, generator=gen)
    ex = build_extractor("fbank", {"num_mel_bins": 40})
    a, b = ex(wave), ex(wave.clone())
    assert a.shape == (_expected_frames(16123), 40)
    np.testing.assert_array_equal(a, b)  # dither 0 by default
    with pytest.raises(ValueError, match="unknown feature type"):
        build_extractor("mfcc")


# ------------------------------------------------------------------------------------------------
# make_features
# ------------------------------------------------------------------------------------------------
def _snapshot(out: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def resumed_nj2(espeak_dir_with_bad, tmp_path_factory):
    """An nj=2 run, then a rerun after job 2's outputs were lost (as if interrupted): snapshots of both.

    Spawning the two worker processes is the slow part (~3 s each run), so both runs are shared."""
    out = tmp_path_factory.mktemp("feats_nj2") / "dump"
    first = make_features(espeak_dir_with_bad, out, nj=2)
    before = _snapshot(out)
    for name in ("feats.2.scp", "utt2num_frames.2", "bad.2"):
        (out / "data" / name).unlink()
    (out / "data" / "feats.2.ark").write_bytes(b"partial")
    second = make_features(espeak_dir_with_bad, out, nj=2)
    return {"out": out, "first": first, "second": second, "before": before, "after": _snapshot(out)}


@pytest.fixture(scope="module")
def feats_nj2(resumed_nj2):
    return resumed_nj2["out"], resumed_nj2["first"]


@pytest.fixture(scope="module")
def feats_nj1(espeak_dir_with_bad, tmp_path_factory):
    out = tmp_path_factory.mktemp("feats_nj1") / "dump"
    result = make_features(espeak_dir_with_bad, out, nj=1)
    return out, result


def test_make_features_outputs(feats_nj2, espeak_dir_with_bad):
    out, result = feats_nj2
    assert result["num_utts"] == len(GOOD_UTTS) + len(BAD_UTTS)
    assert result["num_done"] == len(GOOD_UTTS)
    assert validate_data_dir(out, require_feats=True) == len(GOOD_UTTS) + len(BAD_UTTS)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):  # the data dir is copied alongside
        assert (out / name).read_bytes() == (espeak_dir_with_bad / name).read_bytes()
    feats = _load(out / "feats.scp")
    num_frames = {k: int(v) for k, v in read_table(out / "utt2num_frames").items()}
    assert sorted(feats) == sorted(num_frames) == GOOD_UTTS
    assert list(read_table(out / "feats.scp")) == GOOD_UTTS  # sorted, C order
    src = DataDir.read(espeak_dir_with_bad)
    for utt in GOOD_UTTS:
        mat = feats[utt]
        assert mat.dtype == np.float32 and mat.shape[1] == 80
        assert mat.shape[0] == num_frames[utt]
        wave, _ = read_audio(src.wav_scp[utt])
        assert mat.shape[0] == _expected_frames(wave.shape[0])
        if not src.wav_scp[utt].endswith("|"):
            seconds = sf.info(src.wav_scp[utt]).duration
            assert 0.97 * 100 * seconds - 3 <= mat.shape[0] <= 100 * seconds  # ~100 frames/s
        assert np.isfinite(mat).all() and mat.std() > 0.5  # real speech, not silence
    info = json.loads((out / "feat_info.json").read_text())
    assert info == {
        "feature_type": "fbank",
        "options": {},
        "dim": 80,
        "frame_rate_hz": 100.0,
        "num_utts": len(GOOD_UTTS),
        "num_bad": len(BAD_UTTS),
    }


def test_make_features_equals_extractor(feats_nj2, espeak_dir):
    out, _ = feats_nj2
    feats = _load(out / "feats.scp")
    src = DataDir.read(espeak_dir)
    ex = FbankExtractor()
    for utt in GOOD_UTTS:  # the pipe entry included
        np.testing.assert_array_equal(feats[utt], ex(read_audio(src.wav_scp[utt])[0]))


def test_bad_audio_is_skipped_and_listed(feats_nj2, espeak_dir_with_bad):
    out, result = feats_nj2
    bad = dict(result["bad"])
    assert sorted(bad) == sorted(BAD_UTTS)
    for utt, name in BAD_UTTS.items():
        assert name in bad[utt]  # the reason names the audio file
    listed = read_table(out / "bad_utts")
    assert listed == bad
    assert not set(bad) & set(read_table(out / "feats.scp"))


def test_nj1_equals_nj2(feats_nj1, feats_nj2):
    (out1, res1), (out2, res2) = feats_nj1, feats_nj2
    assert res1["bad"] == res2["bad"]
    assert len(list((out1 / "data").glob("feats.*.ark"))) == 1
    assert len(list((out2 / "data").glob("feats.*.ark"))) == 2
    f1, f2 = _load(out1 / "feats.scp"), _load(out2 / "feats.scp")
    assert sorted(f1) == sorted(f2) == GOOD_UTTS
    for utt in GOOD_UTTS:
        np.testing.assert_array_equal(f1[utt], f2[utt])
    assert (out1 / "utt2num_frames").read_bytes() == (out2 / "utt2num_frames").read_bytes()
    assert (out1 / "bad_utts").read_bytes() == (out2 / "bad_utts").read_bytes()


def test_nj1_keeps_callers_torch_threads(espeak_dir, tmp_path):
    # with nj=1 the job runs in this process; its one-thread setting must not leak to the caller
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        make_features(espeak_dir, tmp_path / "dump", nj=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_rerun_is_noop(feats_nj1, espeak_dir_with_bad):
    out, result = feats_nj1
    before = _snapshot(out)
    again = make_features(espeak_dir_with_bad, out, nj=1)
    assert again == result
    after = _snapshot(out)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # identical outputs
    for name in ("data/feats.1.ark", "data/feats.1.scp", "data/utt2num_frames.1", "data/bad.1"):
        assert after[name][1] == before[name][1], f"{name} was rewritten"  # the job was not redone


def test_resume_redoes_only_the_unfinished_job(resumed_nj2):
    r = resumed_nj2
    assert r["second"] == r["first"]
    before, after = r["before"], r["after"]
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # identical outputs
    assert after["data/feats.1.ark"][1] == before["data/feats.1.ark"][1]  # job 1 was not redone
    assert after["data/feats.2.ark"][1] != before["data/feats.2.ark"][1]  # job 2 was
    assert sorted(_load(r["out"] / "feats.scp")) == GOOD_UTTS


def test_rerun_with_other_options_refused(feats_nj1, espeak_dir_with_bad):
    out, _ = feats_nj1
    with pytest.raises(ValueError, match="Remove it or use another dir"):
        make_features(espeak_dir_with_bad, out, options={"num_mel_bins": 40}, nj=1)


def test_make_features_with_segments(espeak_dir, tmp_path):
    # one recording holding two utterances; each segment's features equal fbank of that slice
    src = DataDir.read(espeak_dir)
    a, _ = read_audio(src.wav_scp["alice-002"])
    rec = tmp_path / "rec.wav"
    sf.write(rec, a.numpy(), 16000, subtype="FLOAT")
    d = DataDir(tmp_path / "data", wav_scp={"alice-rec": str(rec)})
    d.segments = {"alice-x1": ("alice-rec", 0.0, 1.0), "alice-x2": ("alice-rec", 1.0, -1)}
    d.utt2spk = {"alice-x1": "alice", "alice-x2": "alice"}
    d.text = {"alice-x1": "first", "alice-x2": "second"}
    d.write()
    make_features(d.path, tmp_path / "dump", nj=1)
    feats = _load(tmp_path / "dump" / "feats.scp")
    ex = FbankExtractor()
    np.testing.assert_array_equal(feats["alice-x1"], ex(a[:16000]))
    np.testing.assert_array_equal(feats["alice-x2"], ex(a[16000:]))


# ------------------------------------------------------------------------------------------------
# CMVN
# ------------------------------------------------------------------------------------------------
def test_cmvn_stats_match_numpy(feats_nj1, tmp_path):
    out, _ = feats_nj1
    mats = _load(out / "feats.scp")
    allf = np.concatenate([mats[u] for u in GOOD_UTTS]).astype(np.float64)
    stats = compute_cmvn_stats(out / "feats.scp")
    assert stats.shape == (2, 81) and stats.dtype == np.float64
    assert stats[0, -1] == allf.shape[0] == sum(int(v) for v in read_table(out / "utt2num_frames").values())
    count = stats[0, -1]
    np.testing.assert_allclose(stats[0, :-1] / count, allf.mean(0), rtol=1e-9, atol=1e-9)
    var = stats[1, :-1] / count - (stats[0, :-1] / count) ** 2
    np.testing.assert_allclose(var, allf.var(0), rtol=1e-6, atol=1e-8)

    write_cmvn_stats(tmp_path / "cmvn.ark", stats)
    np.testing.assert_array_equal(read_cmvn_stats(tmp_path / "cmvn.ark"), stats)

    cmvn = GlobalCMVN(read_cmvn_stats(tmp_path / "cmvn.ark"))
    normed = cmvn(torch.from_numpy(allf.astype(np.float32))[None]).numpy()[0].astype(np.float64)
    np.testing.assert_allclose(normed.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(normed.std(0), 1.0, atol=1e-3)
    assert "mean" in cmvn.state_dict() and "istd" in cmvn.state_dict()  # saved with the model

    no_var = GlobalCMVN(stats, norm_vars=False)(torch.from_numpy(allf.astype(np.float32))[None]).numpy()[0]
    np.testing.assert_allclose(no_var.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(no_var.std(0), allf.std(0), rtol=1e-4)


def test_cmvn_identity_and_empty(tmp_path):
    x = torch.randn(2, 7, 5)
    torch.testing.assert_close(GlobalCMVN(dim=5)(x), x)
    with pytest.raises(ValueError):
        GlobalCMVN()
    (tmp_path / "feats.scp").write_text("")
    with pytest.raises(ValueError, match="no features"):
        compute_cmvn_stats(tmp_path / "feats.scp")
