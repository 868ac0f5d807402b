"""Noise and reverberation for augmented copies of training utterances.

* Additive noise at a random SNR: ``white`` (Gaussian), ``pink`` (1/f power spectrum, shaped in
  the frequency domain) or ``babble`` (a sum of several other training utterances, each looped
  and started at a random offset). Mixed with :func:`torchaudio.functional.add_noise`.
* Reverberation by a synthetic room impulse response: a direct-path impulse followed, after a
  short pre-delay, by Gaussian noise under an exponential envelope that decays by 60 dB in RT60
  seconds. Applied with :func:`torchaudio.functional.fftconvolve`, then cut back to the
  utterance's length plus a short tail and rescaled to the dry signal's peak.

All randomness comes from the ``numpy.random.Generator`` passed in, so a copy is reproducible
from its plan entry.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.functional as AF


def white_noise(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian white noise, unit variance."""
    return torch.from_numpy(rng.standard_normal(n).astype(np.float32))


def pink_noise(n: int, rng: np.random.Generator) -> torch.Tensor:
    """Noise with a 1/f power spectrum (amplitude ~ 1/sqrt(f)), unit variance."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n=n)
    noise /= noise.std() + 1e-12
    return torch.from_numpy(noise.astype(np.float32))


def babble_noise(n: int, others: list[torch.Tensor], rng: np.random.Generator) -> torch.Tensor:
    """Sum of ``others`` (other utterances), each looped to ``n`` samples from a random offset."""
    if not others:
        raise ValueError("babble needs at least one other utterance")
    total = torch.zeros(n)
    for wave in others:
        wave = wave / (wave.pow(2).mean().sqrt() + 1e-8)  # equal loudness for every talker
        reps = -(-(n + len(wave)) // len(wave))
        looped = wave.repeat(reps)
        start = int(rng.integers(0, len(wave)))
        total += looped[start : start + n]
    return total / (total.pow(2).mean().sqrt() + 1e-8)


def synthetic_rir(rt60: float, sample_rate: int, rng: np.random.Generator, predelay_ms: float = 5.0) -> torch.Tensor:
    """Room impulse response: unit direct path, then exponentially decaying noise (-60 dB at ``rt60``).

    The reverberant tail carries ``2 * rt60`` times the direct path's energy (a direct-to-reverberant
    ratio from about +4 dB at RT60 0.2 s to -2 dB at 0.8 s); the response has unit energy.
    """
    rt60 = max(float(rt60), 0.05)
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.908 * t / rt60)  # ln(1000) = 6.908: amplitude -60 dB
    tail *= np.sqrt(2.0 * rt60 / (np.sum(tail**2) + 1e-12))
    delay = int(predelay_ms * sample_rate / 1000)
    rir = np.zeros(length + delay)
    rir[0] = 1.0
    rir[delay:] += tail
    return torch.from_numpy((rir / np.sqrt(np.sum(rir**2))).astype(np.float32))


def add_reverb(wave: torch.Tensor, rir: torch.Tensor, tail_s: float = 0.3, sample_rate: int = 16000) -> torch.Tensor:
    """Convolve ``wave`` with ``rir``; keep the length plus ``tail_s`` of decay; same peak as the input."""
    wet = AF.fftconvolve(wave, rir)[: len(wave) + int(tail_s * sample_rate)]
    return wet * (wave.abs().max() / (wet.abs().max() + 1e-8))


def add_noise(wave: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Mix ``noise`` (same length) into ``wave`` at ``snr_db`` with torchaudio's ``add_noise``."""
    return AF.add_noise(wave.unsqueeze(0), noise[: len(wave)].unsqueeze(0), torch.tensor([snr_db])).squeeze(0)


def augment(
    wave: torch.Tensor,
    plan: dict,
    rng: np.random.Generator,
    babble_sources: list[torch.Tensor] | None = None,
    sample_rate: int = 16000,
) -> torch.Tensor:
    """Apply ``plan`` (keys ``rt60`` (None = no reverb), ``noise`` (None/white/pink/babble), ``snr_db``).

    Reverb comes first (the room), then noise (the background). The result is scaled down if it
    would clip, otherwise its peak matches the clean input's.
    """
    out = wave.clone()
    if plan.get("rt60"):
        out = add_reverb(out, synthetic_rir(plan["rt60"], sample_rate, rng), sample_rate=sample_rate)
    kind = plan.get("noise")
    if kind:
        if kind == "white":
            noise = white_noise(len(out), rng)
        elif kind == "pink":
            noise = pink_noise(len(out), rng)
        elif kind == "babble":
            noise = babble_noise(len(out), babble_sources or [], rng)
        else:
            raise ValueError(f"unknown noise type {kind!r}")
        out = add_noise(out, noise, plan["snr_db"])
    peak = out.abs().max()
    target = wave.abs().max()
    if peak > 0:
        out = out * min(target / peak, 0.99 / peak)
    return out
