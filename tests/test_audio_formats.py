"""Audio the toolkit reads through PyAV (FFmpeg's libraries), with no ffmpeg binary on PATH."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from asr.data.audio import read_audio

av = pytest.importorskip("av")


def _encode(path, codec: str, container: str | None, rate: int = 16000, seconds: float = 1.0, channels: int = 1):
    """A tone written through PyAV; returns the samples (float32, mono)."""
    t = np.arange(int(rate * seconds)) / rate
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    with av.open(str(path), "w", format=container) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono" if channels == 1 else "stereo")
        fmt = stream.codec_context.format.name
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(tone), frame_size):
            chunk = np.tile(tone[start : start + frame_size], (channels, 1))
            if fmt in ("s16", "s16p"):
                chunk = (chunk * 32767).astype(np.int16)
            if not fmt.endswith("p"):
                chunk = chunk.T.reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(chunk, format=fmt, layout=stream.layout.name)
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return tone


@pytest.mark.parametrize(
    "suffix,codec,container", [(".m4a", "aac", "ipod"), (".webm", "libopus", "webm"), (".g722", "g722", "g722")]
)
def test_compressed_formats_decode_without_an_ffmpeg_binary(tmp_path, monkeypatch, suffix, codec, container):
    if codec not in av.codecs_available:
        pytest.skip(f"PyAV lacks the {codec} encoder")
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg, no sox
    rate = 48000 if codec == "libopus" else 16000
    _encode(tmp_path / f"tone{suffix}", codec, container, rate=rate)
    wave, got_rate = read_audio(tmp_path / f"tone{suffix}", 16000)
    assert got_rate == 16000
    assert abs(wave.shape[0] - 16000) < 0.1 * 16000  # one second, give or take the codec's padding
    # the tone survives: its spectrum peaks at 440 Hz
    spectrum = torch.fft.rfft(wave[:16000] * torch.hann_window(min(16000, wave.shape[0]))).abs()
    assert abs(int(spectrum.argmax()) * 16000 / min(16000, wave.shape[0]) - 440) < 5
    assert wave.abs().max() > 0.2


def test_unreadable_file_names_every_decoder(tmp_path):
    from asr.data.audio import AudioError

    bad = tmp_path / "bad.m4a"
    bad.write_bytes(b"not audio at all" * 10)
    with pytest.raises(AudioError, match="bad.m4a.*soundfile.*pyav"):
        read_audio(bad)
