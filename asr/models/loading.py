"""One loader for every saved model dir: :func:`load_model_dir` returns what a dir holds.

    config.json (kind cif_asr | whisper_cformer)   a stage-1 recognizer            asr.models.auto.load_stage1
    speech_llm.json + stage1.json                  a stage-2 speech LLM            load_speech_llm
    multimodal.json + speech_llm/ + image_x2l/     a stage-3 speech + image LLM    load_multimodal
    image_x2l.json                                 an image interface (Q-Former + adapter)

:func:`dir_kind` names which of these a dir is (an export dir is one of them plus ``export.json``).
Decoding, export and training all load through here, so a new kind is added in one place.
"""

from __future__ import annotations

from pathlib import Path

from asr.models.auto import STAGE1_KINDS, load_stage1, model_kind
from asr.models.image_x2l import CONFIG_NAME as IMAGE_X2L_CONFIG
from asr.models.image_x2l import ImageX2L
from asr.models.multimodal_llm import CONFIG_NAME as MULTIMODAL_CONFIG
from asr.models.multimodal_llm import MultimodalLlm
from asr.models.speech_llm import CONFIG_NAME as SPEECH_LLM_CONFIG
from asr.models.speech_llm import SpeechLlm, stage1_dir_of

SPEECH_LLM, MULTIMODAL, IMAGE_X2L = "speech_llm", "multimodal", "image_x2l"


def dir_kind(model_dir: str | Path) -> str:
    """``multimodal``, ``speech_llm``, ``image_x2l`` or a stage-1 kind (``cif_asr``, ``whisper_cformer``)."""
    model_dir = Path(model_dir)
    if (model_dir / MULTIMODAL_CONFIG).is_file():
        return MULTIMODAL
    if (model_dir / SPEECH_LLM_CONFIG).is_file():
        return SPEECH_LLM
    if (model_dir / IMAGE_X2L_CONFIG).is_file():
        return IMAGE_X2L
    if (model_dir / "config.json").is_file():
        return model_kind(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir}: no such model dir")
    raise ValueError(
        f"{model_dir}: not a model dir (none of {MULTIMODAL_CONFIG}, {SPEECH_LLM_CONFIG}, {IMAGE_X2L_CONFIG}, config.json)"
    )


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


def load_model_dir(model_dir: str | Path, device: str | None = None):
    """The model saved in ``model_dir``, whatever its kind (see the module doc); weights on ``device``
    where the kind takes one (the LLM stages), else on CPU."""
    kind = dir_kind(model_dir)
    if kind == MULTIMODAL:
        return load_multimodal(model_dir, device=device)
    if kind == SPEECH_LLM:
        return load_speech_llm(model_dir, device=device)
    if kind == IMAGE_X2L:
        return ImageX2L.from_pretrained(model_dir)
    if kind in STAGE1_KINDS:
        return load_stage1(model_dir)
    raise ValueError(f"{model_dir}: unknown model kind {kind!r}")
