"""Which torch device a ``--device`` / ``device:`` setting means, for training and decoding alike."""

from __future__ import annotations

import os

import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; ``cuda`` -> GPU ``LOCAL_RANK`` (0 without torchrun,
    so each process of a multi-GPU job gets its own); ``cuda:N`` -> that GPU."""
    if device not in DEVICE_CHOICES and not device.startswith("cuda:"):
        raise ValueError(f"device {device!r} not supported (use auto, cpu, cuda or cuda:N)")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if device.startswith("cuda:"):
        return torch.device(device)
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
