"""One loader for stage-1 model dirs: the ``kind`` in their ``config.json`` names the class.

Dirs written before kinds existed have none and are CIF C-Formers (``cif_asr``).
"""

from __future__ import annotations

import json
from pathlib import Path

from asr.models.cif_asr import CifAsrModel
from asr.models.whisper_cformer import KIND as WHISPER_CFORMER
from asr.models.whisper_cformer import WhisperCFormer

STAGE1_KINDS = {"cif_asr": CifAsrModel, WHISPER_CFORMER: WhisperCFormer}


def model_kind(model_dir: str | Path) -> str:
    """The ``kind`` of a model dir (``cif_asr`` when its config has none)."""
    config = Path(model_dir) / "config.json"
    if not config.is_file():
        raise FileNotFoundError(f"{model_dir}: not a model dir (no config.json)")
    return json.loads(config.read_text()).get("kind", "cif_asr")


def load_stage1(model_dir: str | Path, map_location: str = "cpu") -> CifAsrModel | WhisperCFormer:
    """The stage-1 recognizer saved in ``model_dir``, of whichever kind it is."""
    kind = model_kind(model_dir)
    if kind not in STAGE1_KINDS:
        raise ValueError(f"{model_dir}: model kind {kind!r} is not a stage-1 recognizer ({sorted(STAGE1_KINDS)})")
    return STAGE1_KINDS[kind].from_pretrained(model_dir, map_location=map_location)
