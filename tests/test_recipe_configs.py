"""Every config a recipe ships (conf/ and the ablations of conf/tuning/) parses with the loader of its
stage, so a config left behind by a code change fails here, not hours into a run. No weights load."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from asr.config import load_config
from asr.models.cif_asr import CifAsrConfig
from asr.models.speech_llm import SpeechLlmConfig
from asr.models.whisper_cformer import WhisperCFormerConfig
from asr.training.train_image import load_image_config
from asr.training.train_multimodal import load_joint_config
from asr.training.trainer import TrainConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
STAGE1 = {"cif_asr": CifAsrConfig, "whisper_cformer": WhisperCFormerConfig}


def _corpus_loader(recipe: str):
    local = RECIPES / recipe / "local"
    sys.path.insert(0, str(RECIPES / "mini" / "local"))
    sys.path.insert(0, str(local))
    spec = importlib.util.spec_from_file_location(f"{recipe}_make_corpus", local / "make_corpus.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while it loads
    spec.loader.exec_module(module)
    return module.load_config


def _check_speech_config(path: Path) -> str:
    c = load_config(path)
    if "speech_llm" in c:
        SpeechLlmConfig.from_dict(c["speech_llm"])
        kind = "stage 2"
    else:
        model = c["model"]
        STAGE1[model.get("kind", "cif_asr")].from_dict(model)
        assert c["features"]["type"] in ("fbank", "whisper_encoder"), path
        kind = "stage 1"
    TrainConfig.from_dict(c["train"])
    return kind


@pytest.mark.parametrize("recipe", ["mini", "mini_vis"])
def test_every_config_parses(recipe):
    confs = sorted((RECIPES / recipe / "conf").rglob("*.yaml"))
    assert any(c.parent.name == "tuning" for c in confs)
    corpus = _corpus_loader(recipe)
    kinds = {}
    for path in confs:
        name = path.name
        if name.startswith("corpus_"):
            corpus(path)
            kinds[path] = "corpus"
        elif recipe == "mini_vis" and name.startswith("image_"):
            load_image_config(path)
            kinds[path] = "image stage"
        elif recipe == "mini_vis" and name.startswith("joint_"):
            load_joint_config(path)
            kinds[path] = "stage 3"
        else:
            kinds[path] = _check_speech_config(path)
    expected = {"mini": {"corpus", "stage 1", "stage 2"}, "mini_vis": {"corpus", "image stage", "stage 3"}}[recipe]
    assert set(kinds.values()) == expected
