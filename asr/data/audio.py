"""Reading audio the way Kaldi's wav.scp describes it.

A wav.scp entry is either a path or a shell pipe ending in ``|`` whose stdout is a wav file
(``sox a.mp3 -t wav - |``). A path is decoded by the first decoder that can read it:
soundfile (libsndfile: wav, flac, ogg/vorbis/opus, mp3, sph/NIST, aiff, ...), then PyAV (FFmpeg's
libraries: m4a/aac, webm, raw G.722, ...), then torchaudio (when torchcodec is installed), then an
``ffmpeg`` or ``sox`` process (when on PATH).
Everything is returned as mono float32 in [-1, 1] at the requested sample rate.
"""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

# file name endings that directory inputs of ``asr transcribe`` pick up
AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".wma",
    ".webm",
    ".sph",
    ".nist",
    ".aif",
    ".aiff",
    ".au",
    ".caf",
    ".w64",
)


class AudioError(RuntimeError):
    """An audio source could not be read or holds no samples."""


def _run(command: str | list[str]) -> bytes:
    """stdout of ``command`` (a shell string or an argv list); AudioError when it fails."""
    proc = subprocess.run(command, shell=isinstance(command, str), capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"command failed ({proc.returncode}): {command!r}: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return proc.stdout


def _read_pipe(command: str) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(_run(command)), dtype="float32", always_2d=True)


def _torchaudio(path: str) -> tuple[np.ndarray, int]:
    import torchaudio

    wave, rate = torchaudio.load(path)  # (C, N)
    return wave.T.numpy(), rate


def _ffmpeg(path: str) -> tuple[np.ndarray, int]:
    rate = 16000  # ffmpeg resamples and mixes down itself: raw mono float32 at 16 kHz
    raw = _run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "f32le", "-ac", "1", "-ar", str(rate), "-"])
    return np.frombuffer(raw, dtype="<f4").reshape(-1, 1), rate


# containers PyAV cannot recognise from the bytes: raw codec streams named by their suffix
_RAW_STREAM_FORMATS = {".g722": "g722", ".gsm": "gsm", ".ulaw": "mulaw", ".alaw": "alaw"}


def _pyav(path: str) -> tuple[np.ndarray, int]:
    """Any format FFmpeg's libraries know (m4a/aac, webm/opus, mp3, G.722...) through PyAV, no binary."""
    import av

    fmt = _RAW_STREAM_FORMATS.get(Path(path).suffix.lower())
    with av.open(path, format=fmt) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise ValueError("no audio stream")
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate or stream.rate
    if not chunks:
        raise ValueError("no audio frames")
    # planar (C, n) or packed (1, n * C) frames of any sample type -> (N, C) float32
    channels = stream.codec_context.channels or 1
    data = np.concatenate(
        [c.reshape(channels, -1) if c.shape[0] == channels else c.reshape(-1, channels).T for c in chunks], axis=1
    )
    if np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / np.iinfo(data.dtype).max
    return data.T.astype(np.float32), int(rate)


def _sox(path: str) -> tuple[np.ndarray, int]:
    return sf.read(io.BytesIO(_run(["sox", "-D", path, "-t", "wav", "-"])), dtype="float32", always_2d=True)


def _file_decoders() -> list:
    decoders = [("soundfile", lambda p: sf.read(p, dtype="float32", always_2d=True))]
    if importlib.util.find_spec("av") is not None:
        decoders.append(("pyav", _pyav))
    if importlib.util.find_spec("torchcodec") is not None:  # torchaudio >= 2.9 decodes through torchcodec
        decoders.append(("torchaudio", _torchaudio))
    decoders += [(tool, fn) for tool, fn in (("ffmpeg", _ffmpeg), ("sox", _sox)) if shutil.which(tool)]
    return decoders


def _read_file(path: str) -> tuple[np.ndarray, int]:
    """(samples (N, C), rate) from the first decoder that reads ``path``."""
    if not Path(path).is_file():
        raise AudioError(f"cannot read audio {path!r}: no such file")
    errors = []
    for name, decode in _file_decoders():
        try:
            return decode(path)
        except Exception as exc:  # each decoder raises its own types; report them all at the end
            errors.append(f"{name}: {str(exc).strip()[:200]}")
    raise AudioError(f"cannot read audio {path!r}: " + "; ".join(errors))


def read_audio(source: str | Path, sample_rate: int | None = 16000) -> tuple[torch.Tensor, int]:
    """Read ``source`` (a path or a ``cmd |`` pipe) as mono float32 (the mean of the channels).

    Returns ``(samples, rate)`` with ``samples`` of shape (num_samples,). When ``sample_rate`` is
    given the audio is resampled to it (torchaudio's windowed-sinc resampler).
    Raises :class:`AudioError` naming the source when it cannot be read or is empty.
    """
    src = str(source).strip()
    try:
        data, rate = _read_pipe(src[:-1]) if src.endswith("|") else _read_file(src)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types; name the source in one
        raise AudioError(f"cannot read audio {src!r}: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio {src!r} has no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1), dtype=np.float32))
    if not torch.isfinite(wave).all():
        raise AudioError(f"audio {src!r} contains NaN or infinite samples")
    if sample_rate is not None and rate != sample_rate:
        wave = AF.resample(wave, rate, sample_rate)
        rate = sample_rate
    return wave, rate


def utterance_audio(data, utt: str, cache: dict | None = None, sample_rate: int = 16000) -> torch.Tensor:
    """The samples of utterance ``utt`` of a :class:`asr.data.datadir.DataDir`, cut by ``segments`` if it has them.

    ``cache`` (a dict kept by the caller) holds the last recording read, so consecutive segments of
    one recording read its file once.
    """
    if data.segments is None:
        return read_audio(data.wav_scp[utt], sample_rate)[0]
    cache = {} if cache is None else cache
    rec, start, end = data.segments[utt]
    if cache.get("rec") != rec:
        cache["rec"], cache["wave"] = rec, read_audio(data.wav_scp[rec], sample_rate)[0]
    wave = cache["wave"]
    first = int(start * sample_rate)
    last = wave.shape[0] if end < 0 else int(end * sample_rate)
    return wave[first:last]


def write_wav(path: str | Path, samples: torch.Tensor | np.ndarray, sample_rate: int = 16000) -> None:
    """Write mono 16-bit PCM wav atomically (temp file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = samples.detach().cpu().numpy() if isinstance(samples, torch.Tensor) else np.asarray(samples)
    tmp = path.with_name(path.name + ".tmp")
    sf.write(tmp, np.clip(data, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    tmp.replace(path)
