"""Reading audio the way Kaldi's wav.scp describes it.

A wav.scp entry is either a path (any format soundfile reads: wav, flac, ogg, ...)
or a shell pipe ending in ``|`` whose stdout is a wav file (``sox a.mp3 -t wav - |``).
Everything is returned as mono float32 in [-1, 1] at the requested sample rate.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF


class AudioError(RuntimeError):
    """An audio source could not be read or holds no samples."""


def _read_pipe(command: str) -> tuple[np.ndarray, int]:
    proc = subprocess.run(command, shell=True, capture_output=True)
    if proc.returncode != 0:
        raise AudioError(f"command failed ({proc.returncode}): {command!r}: {proc.stderr.decode(errors='replace').strip()[:300]}")
    return sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)


def read_audio(source: str | Path, sample_rate: int | None = 16000) -> tuple[torch.Tensor, int]:
    """Read ``source`` (a path or a ``cmd |`` pipe) as mono float32.

    Returns ``(samples, rate)`` with ``samples`` of shape (num_samples,). When ``sample_rate`` is
    given the audio is resampled to it (torchaudio's windowed-sinc resampler).
    Raises :class:`AudioError` naming the source when it cannot be read or is empty.
    """
    src = str(source).strip()
    try:
        if src.endswith("|"):
            data, rate = _read_pipe(src[:-1])
        else:
            data, rate = sf.read(src, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises several types; name the file in one
        raise AudioError(f"cannot read audio {src!r}: {exc}") from exc
    if data.shape[0] == 0:
        raise AudioError(f"audio {src!r} has no samples")
    wave = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))
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
