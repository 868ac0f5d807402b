"""Shared fixtures: a small Kaldi data dir of real synthetic speech (espeak-ng), built once per session."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from asr.data.datadir import DataDir

# (utterance id, speaker, espeak-ng voice, transcript); speakers prefix utterance ids, as Kaldi requires
ESPEAK_UTTS = [
    ("alice-001", "alice", "en-us", "hello world"),
    ("alice-002", "alice", "en-us", "the quick brown fox jumps over the lazy dog"),
    ("alice-003", "alice", "en-us", "speech recognition with kaldi features"),
    ("bob-001", "bob", "en-gb", "one two three four five"),
    ("bob-002", "bob", "en-gb", "good morning"),
    ("bob-003", "bob", "en-gb", "this sentence is read through a sox pipe"),
]
# its wav.scp entry is "sox -D ... -r 8000 -t wav - |", a pipe that also changes the rate. -D (no dither) matters:
# by default sox dithers with fresh random noise on every run, so features of the entry would differ run to run.
PIPE_UTT = "bob-003"
BAD_UTTS = {"carol-bad": "corrupt.wav", "carol-empty": "empty.wav"}


@pytest.fixture(scope="session")
def recipe_script():
    """``recipe_script("mini", "make_corpus")``: recipes/<recipe>/local/<name>.py, loaded by path as module
    ``<recipe>_<name>``. Recipes have local scripts of the same name, and whichever local/ dir is first
    on sys.path would win a plain import."""
    root = Path(__file__).resolve().parents[1] / "recipes"

    def load(recipe: str, name: str):
        key = f"{recipe}_{name}"
        if key not in sys.modules:
            spec = importlib.util.spec_from_file_location(key, root / recipe / "local" / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[key] = module
            spec.loader.exec_module(module)
        return sys.modules[key]

    return load


@pytest.fixture(scope="session")
def espeak_dir(tmp_path_factory) -> Path:
    """A valid data dir (wav.scp, text, utt2spk, spk2utt) of 6 espeak-ng utterances, 22.05 kHz wav."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed")
    root = tmp_path_factory.mktemp("espeak")
    data = DataDir(root / "data")
    for utt, spk, voice, text in ESPEAK_UTTS:
        wav = root / "wav" / f"{utt}.wav"
        wav.parent.mkdir(exist_ok=True)
        subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
        data.wav_scp[utt] = f"sox -D {wav} -r 8000 -t wav - |" if utt == PIPE_UTT else str(wav)
        data.text[utt] = text
        data.utt2spk[utt] = spk
    data.write()
    return data.path


@pytest.fixture(scope="session")
def espeak_dir_with_bad(espeak_dir, tmp_path_factory) -> Path:
    """``espeak_dir`` plus two utterances whose audio cannot be read: random bytes and a 0-byte file."""
    root = tmp_path_factory.mktemp("espeak_bad")
    data = DataDir.read(espeak_dir)
    data.path = root / "data"
    (root / "corrupt.wav").write_bytes(b"RIFF\x00\x01garbage" + bytes(range(256)) * 8)
    (root / "empty.wav").write_bytes(b"")
    for utt, name in BAD_UTTS.items():
        data.wav_scp[utt] = str(root / name)
        data.text[utt] = "unreadable audio"
        data.utt2spk[utt] = "carol"
    data.write()
    return data.path


# ---- tiny models and settings shared by the tests -------------------------------------------------
def tiny_train_config(**over):
    """A TrainConfig for a few CPU steps (one thread, no checkpoints unless asked)."""
    from asr.training.trainer import TrainConfig

    cfg = dict(
        max_steps=4,
        max_epochs=100,
        lr=3e-3,
        warmup_steps=2,
        checkpoint_interval=1000,
        log_interval=1,
        num_threads=1,
        device="cpu",
    )
    return TrainConfig(**{**cfg, **over})


def tiny_stage1(units, feat_dim: int, llm=None):
    """A seeded, untrained stage-1 CIF model over frozen-encoder frames; with ``llm`` its classifier
    is tied to the LLM's input embeddings of the LLM-token ``units``."""
    import torch

    from asr.models.cif_asr import CifAsrConfig, CifAsrModel

    torch.manual_seed(0)
    cfg = CifAsrConfig(
        vocab_size=len(units),
        feat_dim=feat_dim,
        encoder_type="frozen",
        frozen_pool=2,
        d_model=32,
        cformer_layers=1,
        cformer_heads=2,
        cformer_ffn=64,
        ctc_weight=0.0,
        classifier="tied" if llm is not None else "linear",
        tied_dim=llm.hidden_size if llm is not None else 0,
    )
    model = CifAsrModel(cfg)
    if llm is not None:
        model.classifier.set_embeddings(llm.input_embeddings().weight.detach()[torch.tensor(units.llm_ids)])
    return model
