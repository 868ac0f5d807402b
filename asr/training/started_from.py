"""What a training run started from, so that resuming it from other inputs is refused.

A stage starts from earlier stages' models (stage 2 from a stage-1 model dir, stage 3 from a
stage-2 model and an image interface, an image run from another's ``--init``). Its checkpoints
hold only what it trains, so a rerun that resumes them with another input model (a retrained
stage 1, a recipe option pointing at another image stage) would silently train on a mixture.
The trainer writes :func:`describe` of its inputs into every checkpoint and :func:`check_same`
compares it on resume.

Models are compared by their tensors, not their files: ``torch.save`` writes the temp file's name
into the archive, so the same weights saved again (a rerun publishing ``final/`` once more) or
copied to another machine have other bytes but the same :func:`weights_digest`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


def _hash_value(digest, value) -> None:
    import torch

    if isinstance(value, torch.Tensor):
        t = value.detach().cpu().contiguous()
        digest.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for key in sorted(value, key=str):
            digest.update(f"key {key!s};".encode())
            _hash_value(digest, value[key])
    elif isinstance(value, (list, tuple)):
        digest.update(f"seq {len(value)};".encode())
        for item in value:
            _hash_value(digest, item)
    else:
        digest.update(f"value {value!r};".encode())


def _load_weights(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError):  # not a plain state dict: its bytes stand for it
        return path.read_bytes()


def weights_digest(path: str | Path) -> str:
    """sha256 of a model: of the tensors (names, dtypes, shapes, values) in every weight file of a dir,
    recursively, by relative file name; a dir without weight files, or a single other file (a
    tokenizer), by its files' bytes."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():  # hidden files (a temp file being written) are not part of the model
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    else:
        files = [path]
    weights = [p for p in files if p.suffix in WEIGHT_SUFFIXES]
    digest = hashlib.sha256()
    for f in weights or files:
        rel = f.relative_to(path).as_posix() if path.is_dir() else f.name
        digest.update(f"file {rel};".encode())
        if weights:
            _hash_value(digest, _load_weights(f))
        else:
            digest.update(f.read_bytes())
    return digest.hexdigest()


def describe(inputs: dict[str, str | Path | None] | None) -> dict[str, dict | None]:
    """{name: path or None} -> {name: {"path": resolved path, "weights": digest} or None (no such input)}."""
    return {
        name: None if p is None else {"path": str(Path(p).resolve()), "weights": weights_digest(p)}
        for name, p in (inputs or {}).items()
    }


def check_same(saved: dict | None, current: dict, checkpoint: str | Path, exp_dir: str | Path) -> None:
    """Raise ``ValueError`` when the run that wrote ``checkpoint`` started from other models than this
    one does (by weights; a moved or copied input is the same input). Inputs the checkpoint did not
    record (written before they were, ``saved`` None) are accepted."""

    def say(d):
        return "nothing" if not d else f"{d['path']} (weights {d['weights'][:12]})"

    for name in sorted(set(saved or {}) & set(current)):  # an input the checkpoint did not record: accepted
        was, now = saved[name], current[name]
        if (was and was["weights"]) == (now and now["weights"]):
            continue
        raise ValueError(
            f"{exp_dir}: {checkpoint} continues a run that started from {say(was)} as its {name}, this run "
            f"starts from {say(now)}: resuming would train one model on both. Rerun with the first {name}, "
            f"or start a new run (another --exp-dir, or remove {Path(checkpoint).parent})"
        )
