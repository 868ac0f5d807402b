"""Tests for asr.data: Kaldi data dir reading/validation/subsetting, and reading audio (read_audio)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr.data.audio import AudioError, read_audio
from asr.data.datadir import DataDir, DataDirError, read_table, subset_data_dir, validate_data_dir

# In C (byte) order uppercase sorts before lowercase: "spk1-B" < "spk1-a". A locale-aware sort would
# put them the other way round, so this dir only validates if the checker uses C order.
GOOD = {
    "wav.scp": "spk1-B /data/b.wav\nspk1-a /data/a.flac\nspk2-c sox /data/c.mp3 -t wav - |\n",
    "text": "spk1-B HELLO  WORLD\nspk1-a good morning\nspk2-c café au lait\n",
    "utt2spk": "spk1-B spk1\nspk1-a spk1\nspk2-c spk2\n",
    "spk2utt": "spk1 spk1-B spk1-a\nspk2 spk2-c\n",
}


def make_dir(root: Path, files: dict[str, str | bytes] | None = None, drop: tuple[str, ...] = ()) -> Path:
    """Write GOOD with some files replaced (str or raw bytes) or dropped."""
    root.mkdir(parents=True, exist_ok=True)
    for name, content in {**GOOD, **(files or {})}.items():
        if name in drop:
            continue
        if isinstance(content, bytes):
            (root / name).write_bytes(content)
        else:
            (root / name).write_text(content, encoding="utf-8")
    return root


def expect_error(d: Path, file: str, line: int | None, *fragments: str, **kwargs) -> str:
    """validate_data_dir(d) must raise DataDirError naming ``d/file`` (and ``:line:`` when given)."""
    with pytest.raises(DataDirError) as info:
        validate_data_dir(d, **kwargs)
    msg = str(info.value)
    where = f"{d / file}:{line}:" if line is not None else f"{d / file}"
    assert where in msg, msg
    for frag in fragments:
        assert frag in msg, msg
    return msg


# ------------------------------------------------------------------------------------------------
# read_table
# ------------------------------------------------------------------------------------------------
def test_read_table_values_and_order(tmp_path):
    d = make_dir(tmp_path / "d")
    wav = read_table(d / "wav.scp")
    assert list(wav) == ["spk1-B", "spk1-a", "spk2-c"]
    assert wav["spk2-c"] == "sox /data/c.mp3 -t wav - |"  # the whole rest of the line, pipe kept
    text = read_table(d / "text")
    assert text["spk1-B"] == "HELLO  WORLD"  # inner spacing preserved
    assert text["spk2-c"] == "café au lait"


def test_read_table_unsorted_allowed_when_asked(tmp_path):
    p = tmp_path / "t"
    p.write_text("b 1\na 2\n")
    assert read_table(p, check_sorted=False) == {"b": "1", "a": "2"}
    with pytest.raises(DataDirError, match=rf"{p}:2: not sorted"):
        read_table(p)


def test_read_table_empty_line(tmp_path):
    p = tmp_path / "t"
    p.write_text("a 1\n\nb 2\n")
    with pytest.raises(DataDirError, match=rf"{p}:2: empty line"):
        read_table(p)


# ------------------------------------------------------------------------------------------------
# validate_data_dir
# ------------------------------------------------------------------------------------------------
def test_good_dir_validates(tmp_path):
    d = make_dir(tmp_path / "d")
    assert validate_data_dir(d) == 3
    data = DataDir.read(d)
    assert data.utts == ["spk1-B", "spk1-a", "spk2-c"]
    assert data.spk2utt() == {"spk1": "spk1-B spk1-a", "spk2": "spk2-c"}


def test_good_dir_with_segments_validates(tmp_path):
    d = make_dir(
        tmp_path / "d",
        {
            "wav.scp": "rec1 /data/rec1.wav\nrec2 sox /data/rec2.flac -t wav - |\n",
            "segments": "spk1-B rec1 0.00 1.50\nspk1-a rec1 1.50 3.25\nspk2-c rec2 0 -1\n",
        },
    )
    assert validate_data_dir(d) == 3
    assert DataDir.read(d).segments == {
        "spk1-B": ("rec1", 0.0, 1.5),
        "spk1-a": ("rec1", 1.5, 3.25),
        "spk2-c": ("rec2", 0.0, -1.0),
    }


def test_not_a_directory(tmp_path):
    with pytest.raises(DataDirError, match="not a directory"):
        validate_data_dir(tmp_path / "nope")


@pytest.mark.parametrize("name", ["wav.scp", "text", "utt2spk", "spk2utt"])
def test_missing_file(tmp_path, name):
    d = make_dir(tmp_path / "d", drop=(name,))
    expect_error(d, name, None, "file is missing")


def test_missing_text_allowed_with_require_text_false(tmp_path):
    d = make_dir(tmp_path / "d", drop=("text",))
    assert validate_data_dir(d, require_text=False) == 3


def test_missing_feats_when_required(tmp_path):
    d = make_dir(tmp_path / "d")
    expect_error(d, "feats.scp", None, "file is missing", require_feats=True)


def test_unsorted_ids(tmp_path):
    d = make_dir(tmp_path / "d", {"wav.scp": "spk1-B /b.wav\nspk2-c /c.wav\nspk1-a /a.wav\n"})
    expect_error(d, "wav.scp", 3, "not sorted", "'spk1-a'", "'spk2-c'")


def test_locale_sorted_is_not_c_sorted(tmp_path):
    # "spk1-a" before "spk1-B" is what a case-insensitive (en_US) sort gives; Kaldi wants LC_ALL=C.
    d = make_dir(
        tmp_path / "d",
        {"utt2spk": "spk1-a spk1\nspk1-B spk1\nspk2-c spk2\n", "spk2utt": "spk1 spk1-a spk1-B\nspk2 spk2-c\n"},
    )
    expect_error(d, "utt2spk", 2, "not sorted", "LC_ALL=C")


def test_duplicate_key(tmp_path):
    d = make_dir(tmp_path / "d", {"text": "spk1-B hello\nspk1-a one\nspk1-a two\nspk2-c three\n"})
    expect_error(d, "text", 3, "duplicate key 'spk1-a'")


def test_wav_scp_has_an_unknown_utterance(tmp_path):
    d = make_dir(tmp_path / "d", {"wav.scp": "spk1-B /b.wav\nspk1-x /x.wav\nspk2-c /c.wav\n"})
    expect_error(d, "wav.scp", 2, "'spk1-x'", "not in utt2spk")


def test_wav_scp_lacks_an_utterance(tmp_path):
    d = make_dir(tmp_path / "d", {"wav.scp": "spk1-B /b.wav\nspk2-c /c.wav\n"})
    msg = expect_error(d, "wav.scp", None, "'spk1-a'", "missing")
    assert f"{d / 'utt2spk'}:2" in msg  # points at the utterance's line in utt2spk


def test_text_lacks_an_utterance(tmp_path):
    d = make_dir(tmp_path / "d", {"text": "spk1-B hello\nspk1-a morning\n"})
    msg = expect_error(d, "text", None, "'spk2-c'", "missing")
    assert f"{d / 'utt2spk'}:3" in msg


def test_empty_transcript(tmp_path):
    d = make_dir(tmp_path / "d", {"text": "spk1-B hello\nspk1-a\nspk2-c three\n"})
    expect_error(d, "text", 2, "empty transcript", "'spk1-a'")


def test_blank_transcript(tmp_path):
    d = make_dir(tmp_path / "d", {"text": "spk1-B hello\nspk1-a good\nspk2-c   \t \n"})
    expect_error(d, "text", 3, "empty transcript", "'spk2-c'")


def test_bad_utf8(tmp_path):
    # latin-1 "é" (0xE9) on line 3 is not valid UTF-8
    d = make_dir(tmp_path / "d", {"text": b"spk1-B hello\nspk1-a good\nspk2-c caf\xe9 au lait\n"})
    expect_error(d, "text", 3, "not valid UTF-8")


def test_speaker_not_prefix_of_utterance(tmp_path):
    d = make_dir(
        tmp_path / "d",
        {"utt2spk": "spk1-B spk1\nspk1-a spk1\nspk2-c bob\n", "spk2utt": "bob spk2-c\nspk1 spk1-B spk1-a\n"},
    )
    expect_error(d, "utt2spk", 3, "'bob' is not a prefix of utterance 'spk2-c'")


def test_utt2spk_needs_exactly_one_speaker(tmp_path):
    d = make_dir(tmp_path / "d", {"utt2spk": "spk1-B spk1\nspk1-a spk1 spk2\nspk2-c spk2\n"})
    expect_error(d, "utt2spk", 2, "expected 'utt spk'")


def test_spk2utt_puts_utterance_under_wrong_speaker(tmp_path):
    d = make_dir(tmp_path / "d", {"spk2utt": "spk1 spk1-B\nspk2 spk1-a spk2-c\n"})
    expect_error(d, "spk2utt", 2, "'spk1-a'", "'spk2'", "regenerate")


def test_spk2utt_lists_utterance_twice(tmp_path):
    d = make_dir(tmp_path / "d", {"spk2utt": "spk1 spk1-B spk1-a spk1-a\nspk2 spk2-c\n"})
    expect_error(d, "spk2utt", 1, "'spk1-a'", "twice")


def test_spk2utt_misses_an_utterance(tmp_path):
    d = make_dir(tmp_path / "d", {"spk2utt": "spk1 spk1-B\nspk2 spk2-c\n"})
    msg = expect_error(d, "spk2utt", None, "'spk1-a'", "missing")
    assert f"{d / 'utt2spk'}:2" in msg


def test_segments_unknown_recording(tmp_path):
    d = make_dir(
        tmp_path / "d",
        {
            "wav.scp": "rec1 /data/rec1.wav\n",
            "segments": "spk1-B rec1 0.0 1.5\nspk1-a recX 1.5 3.0\nspk2-c rec1 3.0 4.0\n",
        },
    )
    expect_error(d, "segments", 2, "'recX' not in wav.scp")


def test_segments_bad_times(tmp_path):
    d = make_dir(
        tmp_path / "d",
        {"wav.scp": "rec1 /r.wav\n", "segments": "spk1-B rec1 0.0 1.5\nspk1-a rec1 1.5 3.0\nspk2-c rec1 4.0 3.0\n"},
    )
    expect_error(d, "segments", 3, "bad times")


def test_feats_scp_with_unknown_utterance(tmp_path):
    d = make_dir(tmp_path / "d", {"feats.scp": "spk1-B f.ark:10\nspk1-z f.ark:99\n"})
    expect_error(d, "feats.scp", 2, "'spk1-z' not in utt2spk")


# ------------------------------------------------------------------------------------------------
# DataDir.write / read, subset_data_dir
# ------------------------------------------------------------------------------------------------
def test_write_sorts_in_c_order_and_makes_spk2utt(tmp_path):
    d = DataDir(tmp_path / "d")
    for utt, spk, text in [("spk2-c", "spk2", "three"), ("spk1-a", "spk1", "two"), ("spk1-B", "spk1", "one")]:
        d.utt2spk[utt], d.text[utt], d.wav_scp[utt] = spk, text, f"/w/{utt}.wav"
    d.write()
    assert (d.path / "utt2spk").read_text() == "spk1-B spk1\nspk1-a spk1\nspk2-c spk2\n"
    assert (d.path / "spk2utt").read_text() == "spk1 spk1-B spk1-a\nspk2 spk2-c\n"
    assert validate_data_dir(d.path) == 3
    back = DataDir.read(d.path)
    assert (back.wav_scp, back.text, back.utt2spk) == (d.wav_scp, d.text, d.utt2spk)


def test_subset_round_trip(tmp_path):
    src = make_dir(tmp_path / "src")
    out = subset_data_dir(src, tmp_path / "sub", ["spk2-c", "spk1-a"])
    assert validate_data_dir(out.path) == 2
    sub, full = DataDir.read(out.path), DataDir.read(src)
    assert sub.utts == ["spk1-a", "spk2-c"]
    for name in ("wav_scp", "text", "utt2spk"):
        assert getattr(sub, name) == {u: getattr(full, name)[u] for u in sub.utts}
    assert (out.path / "spk2utt").read_text() == "spk1 spk1-a\nspk2 spk2-c\n"
    # subsetting the subset with all of its utterances gives the same files back
    again = subset_data_dir(out.path, tmp_path / "sub2", sub.utts)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt"):
        assert (again.path / name).read_bytes() == (out.path / name).read_bytes()


def test_subset_with_segments_keeps_only_needed_recordings(tmp_path):
    src = make_dir(
        tmp_path / "src",
        {
            "wav.scp": "rec1 /r1.wav\nrec2 /r2.wav\n",
            "segments": "spk1-B rec1 0.0 1.5\nspk1-a rec2 0.0 2.0\nspk2-c rec1 1.5 3.0\n",
        },
    )
    out = subset_data_dir(src, tmp_path / "sub", ["spk1-B", "spk2-c"])
    assert validate_data_dir(out.path) == 2
    sub = DataDir.read(out.path)
    assert sub.wav_scp == {"rec1": "/r1.wav"}
    assert sub.segments == {"spk1-B": ("rec1", 0.0, 1.5), "spk2-c": ("rec1", 1.5, 3.0)}


# ------------------------------------------------------------------------------------------------
# read_audio
# ------------------------------------------------------------------------------------------------
def _tone(freq: float, rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(round(rate * seconds))) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, rate: int) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / rate)[spec.argmax()])


def test_read_wav_8k_resampled_to_16k(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(440, 8000, 0.75), 8000, subtype="PCM_16")
    wave, rate = read_audio(path)
    assert rate == 16000
    assert wave.dtype.is_floating_point and wave.ndim == 1
    assert wave.shape[0] == 12000  # 0.75 s at 16 kHz
    assert abs(_peak_hz(wave.numpy(), 16000) - 440) < 3  # pitch preserved
    assert 0.45 < float(wave.abs().max()) < 0.55


def test_read_wav_44k_stereo_to_16k_mono(tmp_path):
    path = tmp_path / "st.wav"
    left, right = _tone(1000, 44100, 1.5), np.zeros(66150, dtype=np.float32)
    sf.write(path, np.stack([left, right], axis=1), 44100, subtype="PCM_16")
    wave, rate = read_audio(path)
    assert rate == 16000 and wave.ndim == 1
    assert wave.shape[0] == math.ceil(66150 * 16000 / 44100) == 24000  # 1.5 s
    assert abs(_peak_hz(wave.numpy(), 16000) - 1000) < 3
    # mono is the channel mean: a 0.5 sine in one channel, silence in the other -> amplitude 0.25
    assert 0.22 < float(wave[1000:-1000].abs().max()) < 0.28


def test_read_audio_no_resampling(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(300, 22050, 0.5), 22050, subtype="PCM_16")
    wave, rate = read_audio(path, sample_rate=None)
    assert rate == 22050 and wave.shape[0] == 11025


def test_read_flac(tmp_path):
    path = tmp_path / "a.flac"
    sig = _tone(500, 16000, 1.2)
    sf.write(path, sig, 16000, subtype="PCM_16")
    wave, rate = read_audio(path)
    assert rate == 16000 and wave.shape[0] == 19200
    np.testing.assert_allclose(wave.numpy(), sig, atol=1 / 16384)  # lossless up to 16-bit quantization


def test_read_sox_pipe(tmp_path):
    path = tmp_path / "a.wav"
    sf.write(path, _tone(700, 44100, 1.0), 44100, subtype="PCM_16")
    direct, _ = read_audio(path)
    # the pipe also downsamples and mixes to 2 channels: read_audio must still give 16 kHz mono
    piped, rate = read_audio(f"sox {path} -c 2 -r 16000 -t wav - |")
    assert rate == 16000 and piped.ndim == 1 and piped.shape[0] == 16000
    assert abs(_peak_hz(piped.numpy(), 16000) - 700) < 3
    same, _ = read_audio(f"sox {path} -t wav - | ")  # trailing space after the bar is allowed
    np.testing.assert_array_equal(same.numpy(), direct.numpy())


def test_failing_pipe_raises_audio_error(tmp_path):
    missing = tmp_path / "missing.wav"
    with pytest.raises(AudioError, match="command failed") as info:
        read_audio(f"sox {missing} -t wav - |")
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"RIFF\x24\x00\x00\x00WAVEjunk" + bytes(range(256)) * 4], ids=["empty", "corrupt"])
def test_unreadable_file_raises_audio_error(tmp_path, content):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError) as info:
        read_audio(path)
    assert str(path) in str(info.value)


def test_missing_file_raises_audio_error(tmp_path):
    with pytest.raises(AudioError, match="nope.wav"):
        read_audio(tmp_path / "nope.wav")


def test_wav_without_samples_raises_audio_error(tmp_path):
    path = tmp_path / "zero.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="no samples") as info:
        read_audio(path)
    assert str(path) in str(info.value)


# ---- speed perturbation --------------------------------------------------------------------------
def _tone_dir(root: Path, with_segments: bool = False) -> Path:
    """A data dir of two 16 kHz tones (1.0 s and 0.5 s at 440 Hz; the second through a pipe)."""
    root.mkdir(parents=True)
    rate = 16000
    for name, seconds in (("a", 1.0), ("b", 0.5)):
        t = np.arange(int(rate * seconds)) / rate
        sf.write(root / f"{name}.wav", 0.3 * np.sin(2 * math.pi * 440 * t), rate, subtype="PCM_16")
    wav_scp = {"rec-a": str(root / "a.wav"), "rec-b": f"cat {root / 'b.wav'} |"}
    if with_segments:
        d = DataDir(root / "data", wav_scp=wav_scp, text={"s1-u1": "one", "s1-u2": "two"}, utt2spk={"s1-u1": "s1", "s1-u2": "s1"})
        d.segments = {"s1-u1": ("rec-a", 0.2, 0.8), "s1-u2": ("rec-b", 0.0, 0.5)}
    else:
        d = DataDir(
            root / "data",
            wav_scp={"s1-u1": wav_scp["rec-a"], "s2-u2": wav_scp["rec-b"]},
            text={"s1-u1": "one", "s2-u2": "two"},
            utt2spk={"s1-u1": "s1", "s2-u2": "s2"},
        )
    d.write()
    return root / "data"


def test_speed_perturbation_makes_kaldi_style_copies_that_read_at_the_new_length(tmp_path):
    from asr.data.perturb import speed_perturb_data_dir

    src = _tone_dir(tmp_path / "src")
    out = speed_perturb_data_dir(src, tmp_path / "sp", [0.9, 1.0, 1.1])
    assert validate_data_dir(tmp_path / "sp") == 6
    assert out.utts == ["s1-u1", "s2-u2", "sp0.9-s1-u1", "sp0.9-s2-u2", "sp1.1-s1-u1", "sp1.1-s2-u2"]
    assert out.utt2spk["sp1.1-s2-u2"] == "sp1.1-s2" and out.utt2spk["s1-u1"] == "s1"
    assert out.text["sp0.9-s1-u1"] == "one"
    for utt, seconds in (("s1-u1", 1.0), ("s2-u2", 0.5)):
        for f in (0.9, 1.0, 1.1):
            key = utt if f == 1.0 else f"sp{f:g}-{utt}"
            samples, rate = read_audio(out.wav_scp[key], sample_rate=None)
            assert rate == 16000, key
            assert abs(len(samples) / rate - seconds / f) < 0.01, (key, len(samples))
            if f != 1.0:  # a tone at f x speed has f x the pitch: the spectrum's peak moves
                spec = np.abs(np.fft.rfft(samples.numpy()))
                peak_hz = np.argmax(spec) * rate / len(samples)
                assert abs(peak_hz - 440 * f) < 5, (key, peak_hz)


def test_speed_perturbation_scales_segments_and_refuses_bad_factors(tmp_path):
    from asr.data.perturb import speed_perturb_data_dir

    src = _tone_dir(tmp_path / "src", with_segments=True)
    out = speed_perturb_data_dir(src, tmp_path / "sp", [0.9, 1.0])
    assert sorted(out.wav_scp) == ["rec-a", "rec-b", "sp0.9-rec-a", "sp0.9-rec-b"]
    rec, start, end = out.segments["sp0.9-s1-u1"]
    assert rec == "sp0.9-rec-a" and start == pytest.approx(0.2 / 0.9) and end == pytest.approx(0.8 / 0.9)
    assert out.segments["s1-u1"] == ("rec-a", 0.2, 0.8)
    assert validate_data_dir(tmp_path / "sp") == 4
    with pytest.raises(ValueError, match="speed factors"):
        speed_perturb_data_dir(src, tmp_path / "bad", [0.9, 3.0])
