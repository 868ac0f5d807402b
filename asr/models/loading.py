"""One loader for every saved model dir: :func:`load_model_dir` returns what a dir holds.

Each dir's main config carries a ``kind`` (as transformers' ``config.json`` carries ``model_type``),
and the kind names the class that loads it:

    kind                        main config        what                                   loaded by
    cif_asr | whisper_cformer   config.json        a stage-1 recognizer                   asr.models.auto.load_stage1
    speech_llm                  speech_llm.json    a stage-2 speech LLM (+ stage1.json)   load_speech_llm
    multimodal                  multimodal.json    a stage-3 speech + image LLM           load_multimodal
    image_caption               image_stage.json   the image stage: interface, LLM,       ImageCaptionModel.from_pretrained
                                                   loss settings and heads
    image_x2l                   image_x2l.json     an image interface (Q-Former + adapter) ImageX2L.from_pretrained

A dir holds one main config; where several of these files sit together (an image-stage dir also
holds ``image_x2l.json``), the table's order above decides. Dirs written before kinds were
recorded have none: their config's file name gives the kind. An export dir is one of these plus
``export.json``. Decoding, export and training all load through here, so a new kind is added in one
place.
"""

from __future__ import annotations

import json
from pathlib import Path

from asr.models.auto import STAGE1_KINDS, load_stage1
from asr.models.caption import KIND as IMAGE_CAPTION
from asr.models.caption import STAGE_CONFIG_NAME as IMAGE_CAPTION_CONFIG
from asr.models.caption import ImageCaptionModel
from asr.models.image_x2l import CONFIG_NAME as IMAGE_X2L_CONFIG
from asr.models.image_x2l import KIND as IMAGE_X2L
from asr.models.image_x2l import ImageX2L
from asr.models.multimodal_llm import CONFIG_NAME as MULTIMODAL_CONFIG
from asr.models.multimodal_llm import KIND as MULTIMODAL
from asr.models.multimodal_llm import MultimodalLlm
from asr.models.speech_llm import CONFIG_NAME as SPEECH_LLM_CONFIG
from asr.models.speech_llm import KIND as SPEECH_LLM
from asr.models.speech_llm import SpeechLlm, stage1_dir_of

# main config file -> the kind of a dir whose config records none (written before kinds were)
MAIN_CONFIGS = {
    MULTIMODAL_CONFIG: MULTIMODAL,
    SPEECH_LLM_CONFIG: SPEECH_LLM,
    IMAGE_CAPTION_CONFIG: IMAGE_CAPTION,
    IMAGE_X2L_CONFIG: IMAGE_X2L,
    "config.json": "cif_asr",
}


def dir_kind(model_dir: str | Path) -> str:
    """The ``kind`` of a model dir: ``multimodal``, ``speech_llm``, ``image_caption``, ``image_x2l`` or a
    stage-1 kind (``cif_asr``, ``whisper_cformer``)."""
    model_dir = Path(model_dir)
    for name, old_kind in MAIN_CONFIGS.items():
        config = model_dir / name
        if config.is_file():
            try:
                return json.loads(config.read_text(encoding="utf-8")).get("kind", old_kind)
            except ValueError as exc:
                raise ValueError(f"{config}: not valid JSON ({exc})") from None
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model dir")
    raise ValueError(f"{model_dir}: not a model dir (none of {', '.join(MAIN_CONFIGS)})")


def load_speech_llm(model_dir: str | Path, device: str | None = None) -> SpeechLlm:
    """A stage-2 model dir -> SpeechLlm, with the stage-1 model it names (``stage1.json``)."""
    model_dir = Path(model_dir)
    overrides = {"device": device} if device else None
    return SpeechLlm.from_pretrained(model_dir, stage1_dir_of(model_dir), overrides)


def load_multimodal(model_dir: str | Path, device: str | None = None) -> MultimodalLlm:
    """A stage-3 model dir -> MultimodalLlm (its ``speech_llm/`` loaded as a stage-2 model)."""
    model_dir = Path(model_dir)
    speech_dir = model_dir / "speech_llm"
    speech = load_speech_llm(speech_dir, device=device)
    return MultimodalLlm.from_parts(model_dir, speech, stage1_dir_of(speech_dir))


def load_llm_decoder(model_dir: str | Path, device: str | None = None) -> tuple[SpeechLlm | MultimodalLlm, SpeechLlm, Path]:
    """A stage-2 or stage-3 model dir -> (the model that generates, its speech LLM, its stage-1 dir);
    for a stage-2 dir the first two are the same model."""
    model_dir = Path(model_dir)
    kind = dir_kind(model_dir)
    if kind == MULTIMODAL:
        model = load_multimodal(model_dir, device=device)
        return model, model.speech, Path(model.stage1_dir)
    if kind != SPEECH_LLM:
        raise ValueError(f"{model_dir}: a {kind} dir, not a speech LLM (stage 2) or multimodal (stage 3) model")
    speech = load_speech_llm(model_dir, device=device)
    return speech, speech, stage1_dir_of(model_dir)


def _load_image_caption(model_dir: Path, device: str | None):
    return ImageCaptionModel.from_pretrained(model_dir, {"device": device} if device else None)


# kind -> loader(model_dir, device)
LOADERS = {
    MULTIMODAL: load_multimodal,
    SPEECH_LLM: load_speech_llm,
    IMAGE_CAPTION: _load_image_caption,
    IMAGE_X2L: lambda model_dir, device: ImageX2L.from_pretrained(model_dir),
    **{kind: (lambda model_dir, device: load_stage1(model_dir)) for kind in STAGE1_KINDS},
}


def load_model_dir(model_dir: str | Path, device: str | None = None):
    """The model saved in ``model_dir``, whatever its kind (see the module doc); weights on ``device``
    where the kind takes one (those with an LLM), else on CPU."""
    kind = dir_kind(model_dir)
    if kind not in LOADERS:
        raise ValueError(f"{model_dir}: unknown model kind {kind!r} (known: {', '.join(sorted(LOADERS))})")
    return LOADERS[kind](Path(model_dir), device)
