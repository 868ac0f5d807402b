"""``asr export``: one self-contained dir that ``asr transcribe --model`` loads.

    <out>/export.json        {"kind": "speech_llm" | "cif", "llm": <LLM reference>, "format": 1,
                              "decode": {"beam_size": B, "cif_weight": W}}  (the defaults of
                              ``asr transcribe``: set them to what scored best on dev)
    <out>/stage1/            the stage-1 model dir: encoder + C-Former weights, config, tokenizer,
                             feature description (feat_info.json)
    <out>/speech_llm.json    (speech_llm) adapter, prompt and LLM configs
    <out>/adapter.safetensors (speech_llm) the trained S-Adapter tensors
    <out>/lora/              (speech_llm, LoRA on) the LoRA tensors in peft's adapter format
    <out>/stage1.json        (speech_llm) {"stage1": "stage1"}: the stage-1 dir, relative to <out>
    multimodal (a stage-3 dir): <out>/multimodal.json, <out>/image_x2l/ (the image interface) and
    <out>/speech_llm/ (the files above, stage1.json -> "../stage1") next to <out>/stage1/

The LLM itself is referenced (embedded name, hub id or local dir), not copied. The dir is built
next to ``out`` and renamed into place: an interrupted export never leaves a half-written model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from asr.io_utils import write_text_atomic
from asr.models.auto import STAGE1_KINDS, load_stage1
from asr.models.llm import LORA_DIR
from asr.models.loading import MULTIMODAL, SPEECH_LLM, dir_kind
from asr.models.multimodal_llm import CONFIG_NAME as MULTIMODAL_CONFIG
from asr.models.speech_llm import CONFIG_NAME as SPEECH_LLM_CONFIG
from asr.models.speech_llm import stage1_dir_of, write_stage1_link
from asr.models.whisper_cformer import KIND as WHISPER_CFORMER

EXPORT_FILE = "export.json"
FORMAT = 1
DECODE_DEFAULTS = {"beam_size": 1, "cif_weight": 0.0}


def _copy_speech_llm(src: Path, dst: Path) -> None:
    """A stage-2 dir's own files (config, adapter weights, LoRA adapter), not its link to stage 1."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in (SPEECH_LLM_CONFIG, "adapter.safetensors", "adapter.pt"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    if (src / LORA_DIR).is_dir():
        shutil.copytree(src / LORA_DIR, dst / LORA_DIR)


def export_model(
    model_dir: Path, out: Path, decode: dict | None = None, dtype=None, cif_tail_threshold: float | None = None
) -> Path:
    """``decode``: decoding defaults for the speech LLM (``beam_size``, ``cif_weight``); ``dtype``
    (a stage-1 Whisper C-Former only, e.g. torch.float16): the weights are saved in that dtype;
    ``cif_tail_threshold``: the stage-1 model's end-of-utterance CIF weight (tuned on dev) in the
    exported config."""
    model_dir = Path(model_dir)
    try:
        kind = dir_kind(model_dir)
    except ValueError:
        kind = None
    if dtype is not None and kind != WHISPER_CFORMER:
        raise ValueError(f"{model_dir}: --dtype applies to stage-1 Whisper C-Former dirs only")
    decode = {**DECODE_DEFAULTS, **(decode or {})}
    unknown = set(decode) - set(DECODE_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown decoding options {sorted(unknown)}; known: {sorted(DECODE_DEFAULTS)}")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if kind == MULTIMODAL:
        tmp.mkdir(parents=True)
        speech = model_dir / "speech_llm"
        shutil.copytree(stage1_dir_of(speech), tmp / "stage1")
        shutil.copytree(model_dir / "image_x2l", tmp / "image_x2l")
        _copy_speech_llm(speech, tmp / "speech_llm")
        write_stage1_link(tmp / "speech_llm", "../stage1")
        shutil.copyfile(model_dir / MULTIMODAL_CONFIG, tmp / MULTIMODAL_CONFIG)
        llm = json.loads((speech / SPEECH_LLM_CONFIG).read_text())["llm"]["name_or_path"]
        doc = {"kind": "multimodal", "llm": llm, "format": FORMAT, "decode": decode}
    elif kind == SPEECH_LLM:
        tmp.mkdir(parents=True)
        shutil.copytree(stage1_dir_of(model_dir), tmp / "stage1")
        _copy_speech_llm(model_dir, tmp)
        write_stage1_link(tmp, "stage1")  # relative: the dir can be moved
        llm = json.loads((model_dir / SPEECH_LLM_CONFIG).read_text())["llm"]["name_or_path"]
        doc = {"kind": "speech_llm", "llm": llm, "format": FORMAT, "decode": decode}
    elif kind in STAGE1_KINDS and (model_dir / "feat_info.json").is_file():
        # averaged.json names the local exp dir the checkpoints came from: provenance that does not travel
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns("averaged.json"))
        if dtype is not None:  # re-save the weights in that dtype (the shipped models: fp16)
            for stale in ("model.pt", "model.safetensors"):
                (tmp / stale).unlink(missing_ok=True)
            load_stage1(model_dir).save_pretrained(tmp, dtype=dtype)
        doc = {"kind": "cif", "llm": None, "format": FORMAT, "model_kind": kind}
    else:
        raise FileNotFoundError(
            f"{model_dir}: not a stage-3 model dir (multimodal.json), a stage-2 one (speech_llm.json) "
            "or a stage-1 one (config.json, feat_info.json)"
        )
    if cif_tail_threshold is not None:
        stage1_config = tmp / "config.json" if doc["kind"] == "cif" else tmp / "stage1" / "config.json"
        config = json.loads(stage1_config.read_text())
        config["cif_tail_threshold"] = cif_tail_threshold
        write_text_atomic(stage1_config, json.dumps(config, indent=2) + "\n")
    write_text_atomic(tmp / EXPORT_FILE, json.dumps(doc, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out
