"""Config dataclasses are built from YAML/JSON mappings by one recursive function."""

from __future__ import annotations

import pytest

from asr.config import dataclass_from_dict
from asr.models.cif_asr import CifAsrConfig
from asr.models.conformer_encoder import ConformerConfig
from asr.models.image_x2l import ImageX2LConfig, QFormerConfig
from asr.models.llm import LoraSettings
from asr.models.speech_llm import SpeechLlmConfig
from asr.models.whisper_cformer import WhisperCFormerConfig


def test_nested_sections_become_their_dataclasses():
    c = CifAsrConfig.from_dict({"conformer": {"num_layers": 3}, "specaug": {"enabled": False}, "d_model": 64})
    assert isinstance(c.conformer, ConformerConfig) and c.conformer.num_layers == 3 and not c.specaug.enabled
    s = SpeechLlmConfig.from_dict({"llm": {"name_or_path": "x", "lora": {"enabled": True, "r": 4}}, "adapter": {"hidden_dim": 8}})
    assert isinstance(s.llm.lora, LoraSettings) and s.llm.lora.r == 4 and s.adapter.hidden_dim == 8
    i = ImageX2LConfig.from_dict({"qformer": {"num_queries": 4}})
    assert isinstance(i.qformer, QFormerConfig) and i.qformer.num_queries == 4
    w = WhisperCFormerConfig.from_dict({"prefix": ["<|startoftranscript|>"], "prefix_ids": [1, 2]})
    assert w.prefix == ("<|startoftranscript|>",) and w.prefix_ids == (1, 2)  # JSON lists back to tuples


def test_unknown_keys_are_named_with_their_section():
    with pytest.raises(ValueError, match=r"unknown key\(s\) in model config.conformer: layers"):
        CifAsrConfig.from_dict({"conformer": {"layers": 3}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) in speech_llm config.llm.lora: rank"):
        SpeechLlmConfig.from_dict({"llm": {"lora": {"rank": 4}}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) in x: nope"):
        dataclass_from_dict(QFormerConfig, {"nope": 1}, "x")
    with pytest.raises(ValueError, match="kind 'cif_asr' is not 'whisper_cformer'"):
        WhisperCFormerConfig.from_dict({"kind": "cif_asr"})
