"""Experiment configs: one YAML file per experiment, one section per stage.

features:  {type: fbank | whisper_encoder, options: {...}}
tokenizer: {model_type: bpe | unigram | char, vocab_size: N}
model:     CifAsrConfig fields
train:     TrainConfig fields
decode:    {batch_frames: N} (stage 1); {beam_size, batch_size, ...} (LLM decoding)
speech_llm: SpeechLlmConfig fields {llm, adapter, prompt} (stage-2 configs)
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

SECTIONS = ("features", "tokenizer", "model", "train", "decode", "speech_llm")


def load_config(path: str | Path, sections: tuple[str, ...] = SECTIONS) -> dict:
    """A YAML config as a dict of sections; any other top-level key is an error naming the file."""
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the config: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: expected a mapping of sections, got {type(config).__name__}")
    unknown = set(config) - set(sections)
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; known: {list(sections)}")
    return config


def dataclass_from_dict(cls, d: dict | None, where: str):
    """Build dataclass ``cls`` from a mapping, recursively: a field typed as a dataclass takes a nested
    mapping, a tuple field takes a list (JSON has none). Keys ``cls`` does not have are an error naming
    ``where`` (the section, e.g. "model config"; nested ones as "model config.conformer")."""
    d = dict(d or {})
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(known))
    if unknown:
        raise ValueError(f"unknown key(s) in {where}: {', '.join(unknown)} (known: {', '.join(known)})")
    hints = typing.get_type_hints(cls)
    for name, value in d.items():
        nested = _dataclass_of(hints[name])
        if nested is not None and isinstance(value, dict):
            d[name] = dataclass_from_dict(nested, value, f"{where}.{name}")
        elif _is_tuple(hints[name]) and isinstance(value, list):
            d[name] = tuple(value)
    return cls(**d)


def _dataclass_of(hint) -> type | None:
    """The dataclass a field's type names (``X`` or ``X | None``), else None."""
    for t in (
        (hint, *typing.get_args(hint))
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        else (hint,)
    ):
        if dataclasses.is_dataclass(t) and isinstance(t, type):
            return t
    return None


def _is_tuple(hint) -> bool:
    return hint is tuple or typing.get_origin(hint) is tuple
