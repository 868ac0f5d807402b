"""``load_recognizer``: a model dir (or the shipped default, or a hub id) -> the Recognizer it describes.

export.json kind "cif" (or none)      a stage-1 C-Former: CifRecognizer (greedy CIF)
export.json kind "speech_llm"         an exported X-LLM stage-2 model: SpeechLlmRecognizer
export.json kind "multimodal"         an exported stage-3 model: SpeechLlmRecognizer with a picture
"""

from __future__ import annotations

import json
from pathlib import Path

from asr.decoding.cif_recognizer import CifRecognizer
from asr.decoding.hypothesis import Recognizer
from asr.device import resolve_device
from asr.pretrained import resolve_model


def load_recognizer(
    model_dir: str | Path | None = None,
    device: str = "cpu",
    beam_size: int | None = None,
    cif_weight: float | None = None,
    image: str | Path | None = None,
    picture_guidance: float | None = None,
    decoding: str | None = None,
) -> Recognizer:
    """The recognizer a model dir describes (None: the shipped default model; a hub id is downloaded,
    see :func:`asr.pretrained.resolve_model`). ``beam_size`` and ``cif_weight`` apply to the speech LLM
    (CIF is greedy); left None, they are the export's defaults (``export.json`` "decode").
    ``image``: a picture shown with all the audio (stage-3 exports only); ``picture_guidance``: with it,
    greedy decoding that amplifies the picture's effect (default 0: plain decoding). ``decoding``: how a
    stage-1 Whisper C-Former writes its transcript, "parallel" or "read" (default: the model's)."""
    model_dir, device = resolve_model(model_dir), str(resolve_device(device))
    export = model_dir / "export.json"
    doc = json.loads(export.read_text()) if export.exists() else {"kind": "cif"}
    if doc.get("kind") not in ("cif", "speech_llm", "multimodal"):
        raise ValueError(f"{export}: unknown kind {doc.get('kind')!r} (expected 'cif', 'speech_llm' or 'multimodal')")
    if doc["kind"] != "cif":
        if decoding is not None:
            raise ValueError(f"{model_dir} is a speech LLM: --decoding applies to stage-1 (C-Former) models")
        if image is not None and doc["kind"] != "multimodal":
            raise ValueError(f"{model_dir} is a speech-only model: --image needs a stage-3 (multimodal) export")
        from asr.decoding.llm_recognizer import SpeechLlmRecognizer  # the LLM stack loads only when needed

        defaults = doc.get("decode") or {}
        return SpeechLlmRecognizer(
            model_dir,
            device=device,
            beam_size=beam_size if beam_size is not None else defaults.get("beam_size", 1),
            cif_weight=cif_weight if cif_weight is not None else defaults.get("cif_weight", 0.0),
            image=image,
            picture_guidance=picture_guidance or 0.0,
        )
    if image is not None:
        raise ValueError(f"{model_dir} is a stage-1 CIF model: --image needs a stage-3 (multimodal) export")
    return CifRecognizer(model_dir, device=device, decoding=decoding)
