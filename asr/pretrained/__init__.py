"""The model ``asr transcribe`` uses when no ``--model`` is given, and model names -> local dirs.

The default model's trained parts ship inside this package (``asr/pretrained/<name>/``, fp16
safetensors); the frozen weights they build on (Whisper's) come from their own package and are
hash-checked when loaded. Its ``MODEL.md`` names the recipe command and corpus that made it.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "whisper-cformer-en"
PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_models() -> list[str]:
    """Names of the model dirs shipped with the package."""
    return sorted(p.name for p in PACKAGE_DIR.iterdir() if (p / "export.json").is_file())


def resolve_model(name_or_path: str | Path | None = None) -> Path:
    """A model dir for ``asr transcribe``: None -> the shipped default; a shipped name; a local dir;
    else a Hugging Face hub id, downloaded (or found in the hub cache) by ``snapshot_download``."""
    if name_or_path is None:
        name_or_path = DEFAULT_MODEL
    path = Path(name_or_path)
    if path.is_dir():
        return path
    shipped = PACKAGE_DIR / str(name_or_path)
    if (shipped / "export.json").is_file():
        return shipped
    if str(name_or_path) == DEFAULT_MODEL:
        raise FileNotFoundError(
            f"the default model {DEFAULT_MODEL!r} is not in this installation ({shipped}); "
            "give --model DIR (a recipe's exp/<tag>/final or an exported model)"
        )
    if path.exists() or str(name_or_path).startswith((".", "/")) or str(name_or_path).count("/") != 1:
        raise FileNotFoundError(
            f"{name_or_path}: no such model dir (shipped models: {', '.join(shipped_models()) or 'none'}; "
            "a hub id looks like owner/name)"
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=str(name_or_path)))
    except Exception as exc:  # offline, unknown repo, ...: one clear line
        raise FileNotFoundError(
            f"{name_or_path}: not a local model dir, and the hub download failed "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
        ) from None
