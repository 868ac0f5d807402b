"""Stage-1 training entry point (X-LLM stage 1): the CIF C-Former recognizer on cached features.

Writes into ``exp_dir``: checkpoints/, train_log.csv, valid_log.csv, curves.png, best/ (lowest
valid loss) and final/ (the model to decode with: best/ if validation ran, else the last state),
each model dir holding config.json, model.pt, the tokenizer and the feature description.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from asr.config import load_config
from asr.features.cmvn import read_cmvn_stats
from asr.models.cif_asr import CifAsrConfig, CifAsrModel
from asr.models.whisper_cformer import KIND as WHISPER_CFORMER
from asr.models.whisper_cformer import WhisperCFormer, build_whisper_cformer
from asr.tokenizer import LlmUnits, Tokenizer, WhisperUnits, load_tokenizer
from asr.training.data import speech_batches
from asr.training.stage import StageParts, run_stage, train_config

log = logging.getLogger(__name__)


def build_model(
    config: dict, feat_dim: int, tokenizer: Tokenizer | LlmUnits | WhisperUnits | int, cmvn_path: Path | None
) -> CifAsrModel | WhisperCFormer:
    """The stage-1 model of the config's ``model.kind`` (``cif_asr``, the default, or
    ``whisper_cformer``); with ``classifier: tied`` the unit embeddings come from the units' LLM.

    ``tokenizer`` may be a bare vocabulary size (benchmarks): a tied classifier's table stays zero.
    """
    section = config.get("model", {})
    stats = read_cmvn_stats(cmvn_path) if cmvn_path and cmvn_path.exists() else None
    if section.get("kind") == WHISPER_CFORMER:
        if not isinstance(tokenizer, WhisperUnits):
            raise ValueError("model kind whisper_cformer needs Whisper's tokens as units (tokenizer: {model_type: whisper})")
        return build_whisper_cformer({**section, "feat_dim": feat_dim, "whisper": tokenizer.whisper}, tokenizer.hf, stats)
    vocab_size = tokenizer if isinstance(tokenizer, int) else len(tokenizer)
    model_cfg = CifAsrConfig.from_dict({**section, "feat_dim": feat_dim, "vocab_size": vocab_size})
    if model_cfg.classifier != "tied" or isinstance(tokenizer, int):
        return CifAsrModel(model_cfg, cmvn_stats=stats)
    if not isinstance(tokenizer, LlmUnits):
        raise ValueError("classifier 'tied' needs LLM-token units (tokenizer: {type: llm, ...})")
    from asr.models.llm import LlmConfig, load_llm

    embeddings = load_llm(LlmConfig(name_or_path=tokenizer.llm)).input_embeddings().weight.detach()  # (V_llm, E)
    model_cfg.tied_dim = embeddings.shape[1]
    model = CifAsrModel(model_cfg, cmvn_stats=stats)
    model.classifier.set_embeddings(embeddings[torch.tensor(tokenizer.llm_ids)].float())
    return model


def finalize_model_dir(model_dir: Path, tokenizer: Tokenizer, feat_info: dict) -> None:
    """Make a model dir self-contained: tokenizer and feature description next to the weights."""
    tokenizer.save_to(model_dir)
    (model_dir / "feat_info.json").write_text(json.dumps(feat_info, indent=2) + "\n")


def train(
    config_path: str | Path,
    train_dir: str | Path,
    valid_dir: str | Path | None,
    tokenizer_path: str | Path,
    exp_dir: str | Path,
    overrides: dict | None = None,
) -> Path:
    config = load_config(config_path)
    train_cfg = train_config(config, overrides, config_path)
    train_dir = Path(train_dir)
    if train_cfg.gradient_checkpointing:
        raise ValueError(
            f"{config_path}: train.gradient_checkpointing applies to the stage-2 LLM (asr train-llm); "
            "stage 1 has no LLM to checkpoint"
        )

    def build(device) -> StageParts:
        tokenizer = load_tokenizer(tokenizer_path)
        feat_info = json.loads((train_dir / "feat_info.json").read_text())
        model = build_model(config, feat_info["dim"], tokenizer, train_dir / "cmvn.ark")
        train_set, sampler, valid_fn = speech_batches(train_dir, valid_dir, tokenizer, model.frame_rate_divisor, train_cfg)
        n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info(
            "model: %.2fM trainable parameters; %d train utterances in %d batches", n_params / 1e6, len(train_set), len(sampler)
        )
        return StageParts(
            model,
            sampler,
            train_set.collate,
            valid_fn,
            trainable=model.optimizer_groups() if hasattr(model, "optimizer_groups") else None,
            started_from={"tokenizer": tokenizer.model_path},
            finalize=lambda d: finalize_model_dir(d, tokenizer, feat_info),
        )

    return run_stage(train_cfg, exp_dir, build)
