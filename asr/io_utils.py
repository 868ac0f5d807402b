"""Small file helpers: everything the toolkit writes goes to a temp file first, then is renamed."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_table(path: str | Path, rows: dict[str, str] | list[tuple[str, str]]) -> None:
    """Write a Kaldi-style ``key value`` table, sorted by key (C locale order)."""
    items = sorted(rows.items() if isinstance(rows, dict) else rows, key=lambda kv: kv[0].encode())
    write_text_atomic(path, "".join(f"{k} {v}\n" for k, v in items))


def save_config_and_weights(
    out_dir: str | Path, config_name: str, config: dict, weights_name: str, state: dict, kind: str | None = None
) -> None:
    """A model dir as save_pretrained writes it: a JSON config (led by ``kind``, the name
    ``asr.models.load_model_dir`` dispatches on) and the weights, each atomically."""
    import json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if kind is not None:
        config = {"kind": kind, **{k: v for k, v in config.items() if k != "kind"}}
    write_text_atomic(out_dir / config_name, json.dumps(config, indent=2) + "\n")
    save_weights(out_dir / weights_name, state)


def save_weights(path: str | Path, state: dict) -> None:
    """Tensors to ``path`` atomically: safetensors for a ``.safetensors`` name, else torch's format."""
    import torch

    with atomic_path(path) as tmp:
        if Path(path).suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file(_unshared(state), str(tmp), metadata={"format": "pt"})
        else:
            torch.save(state, tmp)


def _unshared(state: dict) -> dict:
    """Contiguous tensors, each with storage of its own (safetensors refuses tied weights, e.g. a
    classifier sharing its matrix with an embedding table): a tensor whose storage was seen is copied."""
    seen, out = set(), {}
    for k, v in state.items():
        v = v.detach()
        ptr = v.untyped_storage().data_ptr()
        out[k] = v.clone().contiguous() if ptr in seen else v.contiguous()
        seen.add(ptr)
    return out


def read_model_config(path: str | Path, kind: str) -> dict:
    """A model dir's JSON config without its ``kind`` field. A dir of another kind is an error naming
    the file; a dir written before kinds were recorded has none and is taken as ``kind``."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a {kind} model dir")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    found = config.pop("kind", kind)
    if found != kind:
        raise ValueError(f"{path}: a {found} model dir, not {kind}")
    return config


def load_state_file(path: str | Path, map_location: str = "cpu") -> dict:
    """The tensors of one weights file (``.safetensors``, else torch's pickle format, tensors only);
    a file that cannot be read raises ValueError naming it."""
    import torch

    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device=map_location)
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch.load and safetensors raise many types for a damaged file
        raise ValueError(f"{path}: cannot read the weights ({type(exc).__name__}: {exc})") from None


def load_weights(model_dir: str | Path, stem: str = "model", map_location: str = "cpu") -> dict:
    """The state dict of a model dir: ``<stem>.safetensors`` if present, else ``<stem>.pt``."""
    model_dir = Path(model_dir)
    for name in (f"{stem}.safetensors", f"{stem}.pt"):
        if (model_dir / name).is_file():
            return load_state_file(model_dir / name, map_location)
    raise FileNotFoundError(f"{model_dir}: no weights ({stem}.safetensors or {stem}.pt)")
