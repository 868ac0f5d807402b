"""X-LLM stage 2: prompt assembly and label masking token by token, the S-Adapter, training steps
that touch only the adapter, batched generation, save/load, and the stage-2 entry points on a dump dir.

Uses the tiny random GLM (fast) for most checks and the embedded SmolLM2 for one train+decode run.
"""

from __future__ import annotations

import json

import kaldiio
import numpy as np
import pytest
import torch
from conftest import tiny_stage1

from asr.data.batching import IGNORE_ID
from asr.io_utils import load_state_file, write_table
from asr.models.cif_asr import CifAsrConfig, CifAsrModel
from asr.models.cif_fusion import CifFusion
from asr.models.llm import LlmConfig, load_llm
from asr.models.s_adapter import SAdapter, SAdapterConfig
from asr.models.speech_llm import Prompt, PromptConfig, SpeechLlm, SpeechLlmConfig, assemble, strip_repetition
from asr.tokenizer import build_llm_units, load_tokenizer

WORDS = "the cat sat on a mat and dog ran to red blue big small".split()
FEAT_DIM = 24


@pytest.fixture(scope="module")
def tiny_llm():
    return load_llm(LlmConfig(name_or_path="tiny-glm"))


@pytest.fixture(scope="module")
def dump_dir(tmp_path_factory, tiny_llm):
    """Random 'frozen-encoder features' with transcripts, and LLM-token units of the tiny GLM."""
    d = tmp_path_factory.mktemp("dump")
    rng = np.random.default_rng(0)
    texts, frames = {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
        for i in range(16):
            utt = f"spk0-{i:03d}"
            n = int(rng.integers(60, 100))
            w(utt, rng.standard_normal((n, FEAT_DIM)).astype(np.float32))
            texts[utt], frames[utt] = " ".join(rng.choice(WORDS, size=rng.integers(2, 5))), str(n)
    write_table(d / "text", texts)
    write_table(d / "utt2num_frames", frames)
    (d / "feat_info.json").write_text(
        json.dumps({"feature_type": "whisper_encoder", "options": {}, "dim": FEAT_DIM, "frame_rate_hz": 50.0})
    )
    build_llm_units(d / "text", "tiny-glm", d / "units", hf_tokenizer=tiny_llm.tokenizer)
    return d


def stage1_model(units, llm, tied: bool = True) -> CifAsrModel:
    return tiny_stage1(units, FEAT_DIM, llm if tied else None).eval()


def speech_config(mode: str = "mlp") -> SpeechLlmConfig:
    return SpeechLlmConfig(llm=LlmConfig(name_or_path="tiny-glm"), adapter=SAdapterConfig(hidden_dim=64, mode=mode))


# ---- prompt and assembly -------------------------------------------------------------------------
def test_prompt_uses_chat_template_and_markers(tiny_llm):
    prompt = Prompt(tiny_llm.tokenizer, PromptConfig(instruction="Transcribe it.", system=None))
    prefix = tiny_llm.tokenizer.decode(prompt.prefix)
    suffix = tiny_llm.tokenizer.decode(prompt.suffix)
    assert "Transcribe it." in prefix and prefix.rstrip().endswith("<speech>")
    assert suffix.startswith("</speech>")
    rendered = tiny_llm.tokenizer.apply_chat_template(
        [{"role": "user", "content": "X"}], tokenize=False, add_generation_prompt=True
    )
    head = rendered.split("X")[0]
    assert prefix.startswith(head.strip()[:5])  # the template's opening tokens come first
    assert prompt.target_ids("the cat")[-1] == tiny_llm.tokenizer.eos_token_id


def test_assemble_labels_and_embeddings_token_by_token(tiny_llm):
    prompt = Prompt(tiny_llm.tokenizer, PromptConfig())
    embed = tiny_llm.input_embeddings()
    H = tiny_llm.hidden_size
    speech = [torch.randn(3, H), torch.randn(5, H)]
    targets = [prompt.target_ids("the cat"), prompt.target_ids("a dog ran to the mat")]
    P1, P2 = len(prompt.prefix), len(prompt.suffix)
    for left in (False, True):
        batch = assemble(embed, prompt, speech, targets, left_pad=left)
        lengths = [P1 + s.shape[0] + P2 + len(t) for s, t in zip(speech, targets)]
        S = max(lengths)
        assert batch.inputs_embeds.shape == (2, S, H)
        for b in range(2):
            pad = S - lengths[b]
            start = pad if left else 0
            mask = batch.attention_mask[b].tolist()
            assert mask == ([0] * pad + [1] * lengths[b] if left else [1] * lengths[b] + [0] * pad)
            labels = batch.labels[b, start : start + lengths[b]].tolist()
            n_prompt = P1 + speech[b].shape[0] + P2
            assert labels[:n_prompt] == [IGNORE_ID] * n_prompt  # prompt and speech: never a target
            assert labels[n_prompt:] == targets[b]  # transcript + eos, token by token
            pad_labels = batch.labels[b, :pad] if left else batch.labels[b, lengths[b] :]
            assert (pad_labels == IGNORE_ID).all()
            x = batch.inputs_embeds[b, start:]
            torch.testing.assert_close(x[:P1], embed(torch.tensor(prompt.prefix)))
            torch.testing.assert_close(x[P1 : P1 + speech[b].shape[0]], speech[b])
            torch.testing.assert_close(x[n_prompt - P2 : n_prompt], embed(torch.tensor(prompt.suffix)))
            torch.testing.assert_close(x[n_prompt : lengths[b]], embed(torch.tensor(targets[b])))
            assert batch.position_ids[b, start : start + lengths[b]].tolist() == list(range(lengths[b]))


def test_strip_repetition():
    assert strip_repetition([1, 2, 3]) == [1, 2, 3]
    assert strip_repetition([5, 7, 7, 7, 7, 7, 7, 9]) == [5, 7, 7, 7]
    assert strip_repetition([1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3]) == [1, 2, 3, 2, 3, 2, 3]
    assert strip_repetition([4, 4, 4]) == [4, 4, 4]  # three in a row is still speech ("no no no")
    phrase = [10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert strip_repetition([1] + phrase * 3 + [2]) == [1] + phrase * 2  # a long phrase: a third copy is a loop
    assert strip_repetition([1] + phrase * 2 + [2]) == [1] + phrase * 2 + [2]


def test_adapter_expected_embedding_starts_at_the_stage1_posterior():
    table = torch.randn(10, 16)
    adapter = SAdapter(SAdapterConfig(hidden_dim=8, mode="expected_embedding", temperature=1.0), 4, 16, table)
    hidden = torch.randn(2, 3, 4)
    logits = torch.randn(2, 3, 10) * 50  # nearly one-hot
    out = adapter(hidden, logits)
    torch.testing.assert_close(out, torch.softmax(logits, -1) @ table)
    with pytest.raises(ValueError, match="tied"):
        SAdapter(SAdapterConfig(mode="expected_embedding"), 4, 16, None)


def test_gated_adapter_starts_at_the_posterior_and_opens_slowly():
    """gate: true keeps a trained-size correction out at step 0 (tanh(0) = 0) while its gradient reaches
    the gate; after one Adam step the correction is lr-sized, where the ungated zero-initialised layer
    moves every output by about hidden_dim x lr."""
    torch.manual_seed(0)
    table = torch.randn(10, 16) * 0.1  # an LLM's embeddings are small
    hidden, logits = torch.randn(2, 3, 4) * 5, torch.randn(2, 3, 10) * 50

    def after_one_step(gate: bool) -> float:
        adapter = SAdapter(SAdapterConfig(hidden_dim=256, mode="expected_embedding", gate=gate), 4, 16, table)
        start = torch.softmax(logits, -1) @ table
        torch.testing.assert_close(adapter(hidden, logits), start)
        opt = torch.optim.Adam(adapter.parameters(), lr=1e-3)
        adapter(hidden, logits).pow(2).sum().backward()
        if gate:
            assert adapter.gate.grad is not None and adapter.gate.grad.abs() > 0
        opt.step()
        with torch.no_grad():
            return (adapter(hidden, logits) - start).norm(dim=-1).mean().item()

    assert after_one_step(gate=True) < 0.1 * after_one_step(gate=False)
    with pytest.raises(ValueError, match="gate"):
        SAdapter(SAdapterConfig(mode="mlp", gate=True), 4, 16)


# ---- the model -----------------------------------------------------------------------------------
def _batch(dump_dir, model, n=4):
    from asr.training.data import FeatureDataset
    from asr.training.train_speech_llm import LlmTargets

    units = load_tokenizer(dump_dir / "units")
    data = LlmTargets(FeatureDataset(dump_dir, units, frame_divisor=2, preload=True), model)
    return data.collate(list(range(n)))


def _train_steps(model, inputs: dict, lr: float, steps: int) -> list[float]:
    """AdamW steps on the trainable parameters over one fixed batch; the loss of each step."""
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        out = model(**inputs)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    return losses


@pytest.mark.parametrize("mode", ["mlp", "expected_embedding"])
def test_training_steps_touch_only_the_adapter(dump_dir, tiny_llm, mode):
    units = load_tokenizer(dump_dir / "units")
    model = SpeechLlm(speech_config(mode), stage1_model(units, tiny_llm), tiny_llm)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not n.startswith("adapter.")}
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(n.startswith("adapter.") for n, p in model.named_parameters() if p.requires_grad)
    batch = _batch(dump_dir, model)
    inputs = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
    losses = _train_steps(model, inputs, lr=2e-2, steps=25)
    # a random tiny LLM has near-uniform outputs: the adapter can move them only a little
    assert losses[-1] < losses[0] - 0.1, losses
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} changed"


def test_batched_generation_equals_one_by_one_and_save_load(dump_dir, tiny_llm, tmp_path):
    units = load_tokenizer(dump_dir / "units")
    model = SpeechLlm(speech_config(), stage1_model(units, tiny_llm), tiny_llm).eval()
    batch = _batch(dump_dir, model, n=3)
    together = model.generate(batch["feats"], batch["feat_lengths"], max_new_extra=4)
    for b in range(3):
        n = int(batch["feat_lengths"][b])
        alone = model.generate(batch["feats"][b : b + 1, :n], batch["feat_lengths"][b : b + 1], max_new_extra=4)
        assert alone[0]["llm_ids"] == together[b]["llm_ids"]
    assert all(len(r["cif_tokens"]) == len(r["fire_frames"]) for r in together)
    model.save_pretrained(tmp_path / "stage2")
    model.stage1.save_pretrained(tmp_path / "stage1")
    saved = load_state_file(tmp_path / "stage2" / "adapter.safetensors")
    assert saved and all(k.startswith("adapter.") for k in saved)  # no LLM or stage-1 copy
    again = SpeechLlm.from_pretrained(tmp_path / "stage2", tmp_path / "stage1")
    assert [r["llm_ids"] for r in again.generate(batch["feats"], batch["feat_lengths"], max_new_extra=4)] == [
        r["llm_ids"] for r in together
    ]


# ---- CIF fusion -----------------------------------------------------------------------------------
def test_cif_fusion_scores_by_position():
    # 2 utterances, 3 CIF positions, units: blank, unk, then LLM tokens 10, 11, 12; vocab 16, eos 15
    logits = torch.randn(2, 3, 5)
    fusion = CifFusion(logits, torch.tensor([3, 1]), torch.tensor([-1, -1, 10, 11, 12]), eos_id=15, weight=1.0, floor=-50.0)
    lp = logits.log_softmax(-1)
    at0 = fusion.vocab_scores(0, 16)  # (B, V)
    assert torch.allclose(at0[:, [10, 11, 12]], lp[:, 0, 2:])
    assert torch.allclose(at0[:, 3], lp[:, 0, 1])  # a token outside the units: the CIF <unk> probability
    assert (at0[:, 15] == -50.0).all()  # eos while positions remain
    at1 = fusion.vocab_scores(1, 16)
    assert at1[1, 15] == 0.0 and (at1[1, :15] == -50.0).all()  # utterance 2 has used its one position
    assert torch.allclose(at1[0, [10, 11, 12]], lp[0, 1, 2:])
    # beams: rows are utterance-major, each utterance's scores repeated per beam
    beams = CifFusion(logits, torch.tensor([3, 1]), torch.tensor([-1, -1, 10, 11, 12]), eos_id=15, weight=2.0, num_beams=2)
    out = beams(torch.zeros(4, 0, dtype=torch.long), torch.zeros(4, 16))
    assert torch.equal(out[0], out[1]) and torch.equal(out[2], out[3]) and not torch.equal(out[0], out[2])
    assert torch.allclose(out[0], 2.0 * beams.vocab_scores(0, 16)[0])


@pytest.mark.parametrize("beams", [1, 3])
def test_cif_fusion_weight_moves_the_llm_to_the_cif_hypothesis(dump_dir, tiny_llm, beams):
    units = load_tokenizer(dump_dir / "units")
    model = SpeechLlm(speech_config(), stage1_model(units, tiny_llm), tiny_llm).eval()
    with torch.no_grad():  # a confident stage 1: no near-ties between units for the LLM to break
        model.stage1.classifier.log_scale += 6.0
    batch = _batch(dump_dir, model, n=4)
    with pytest.raises(ValueError, match="units"):
        model.generate(batch["feats"], batch["feat_lengths"], cif_weight=1.0)
    model.set_units(units)
    plain = model.generate(batch["feats"], batch["feat_lengths"], num_beams=beams, max_new_extra=4)
    assert plain == model.generate(batch["feats"], batch["feat_lengths"], num_beams=beams, max_new_extra=4, cif_weight=0.0)
    fused = model.generate(batch["feats"], batch["feat_lengths"], num_beams=beams, max_new_extra=4, cif_weight=1000.0)
    unit_of = {t: u + 2 for u, t in enumerate(units.llm_ids)}
    kept = [r for r in fused if not r["repetition_cut"]]  # (the random stage 1 repeats itself)
    assert len(kept) >= 2
    for r in kept:  # a dominant CIF vote: the CIF hypothesis, token for token (<unk>: a token outside the units)
        assert [unit_of.get(t, 1) for t in r["llm_ids"]] == r["cif_tokens"]
    assert any(len(r["llm_ids"]) != len(f["cif_tokens"]) or r["llm_ids"] != f["llm_ids"] for r, f in zip(plain, fused))


# ---- stage-2 entry points on real (espeak) speech -------------------------------------------------
@pytest.mark.slow  # end to end: in `make test`, not `make test-fast`
def test_train_resume_decode_export_transcribe(espeak_dir, tiny_llm, tmp_path):
    """train-llm (resumable) -> decode-llm -> export -> asr transcribe, with a random stage-1 fbank model."""
    import subprocess
    import sys
    from pathlib import Path

    from asr.decoding.llm_decode import decode_dump_dir
    from asr.export import export_model
    from asr.features.make_feats import make_features
    from asr.models.conformer_encoder import ConformerConfig
    from asr.training.train_cif import finalize_model_dir
    from asr.training.train_speech_llm import train

    dump = tmp_path / "dump"
    make_features(espeak_dir, dump, "fbank")
    units = load_tokenizer(build_llm_units(dump / "text", "tiny-glm", tmp_path / "units", hf_tokenizer=tiny_llm.tokenizer))
    torch.manual_seed(0)
    cfg = CifAsrConfig(
        vocab_size=len(units),
        feat_dim=80,
        d_model=32,
        cformer_layers=1,
        cformer_heads=2,
        cformer_ffn=64,
        ctc_weight=0.0,
        classifier="tied",
        tied_dim=tiny_llm.hidden_size,
        conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, kernel_size=5, subsampling_channels=8),
    )
    stage1 = CifAsrModel(cfg)
    stage1.classifier.set_embeddings(tiny_llm.input_embeddings().weight.detach()[torch.tensor(units.llm_ids)])
    stage1.save_pretrained(tmp_path / "stage1")
    finalize_model_dir(tmp_path / "stage1", units, json.loads((dump / "feat_info.json").read_text()))
    config = tmp_path / "stage2.yaml"
    config.write_text(
        "speech_llm:\n  llm: {name_or_path: tiny-glm}\n  adapter: {hidden_dim: 32, mode: expected_embedding}\n"
        "train: {max_steps: 3, lr: 0.01, warmup_steps: 1, max_frames_per_batch: 2000, checkpoint_interval: 1, log_interval: 1}\n"
    )
    exp = tmp_path / "exp"
    final = train(config, tmp_path / "stage1", dump, None, exp)
    assert {p.name for p in final.iterdir()} >= {"adapter.safetensors", "speech_llm.json", "stage1.json"}
    ckpt = torch.load(sorted((exp / "checkpoints").glob("step_*.pt"))[-1], weights_only=False)
    assert ckpt["step"] == 3 and all(k.startswith("adapter.") for k in ckpt["model"])  # no frozen LLM in checkpoints
    train(config, tmp_path / "stage1", dump, None, exp, overrides={"max_steps": 5})  # resumes at step 3
    steps = [int(line.split(",")[0]) for line in (exp / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5]

    info = decode_dump_dir(final, dump, tmp_path / "decode", beam_size=2, batch_size=4)
    hyp = (tmp_path / "decode" / "hyp").read_text().splitlines()
    assert len(hyp) == info["utts"] == len((dump / "feats.scp").read_text().splitlines())
    assert (tmp_path / "decode" / "hyp_cif").exists() and (tmp_path / "decode" / "ref").exists()
    assert info["llm_positions_per_second"] > 0 and info["encoder_frames_per_second"] > 0

    exported = export_model(final, tmp_path / "model")
    doc = json.loads((exported / "export.json").read_text())
    assert doc["kind"] == "speech_llm" and doc["decode"] == {"beam_size": 1, "cif_weight": 0.0}
    wav = next(p for p in (espeak_dir / "wav.scp").read_text().split() if p.endswith(".wav"))
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "asr"),
            "transcribe",
            "--model",
            str(exported),
            "-o",
            str(out),
            "-f",
            "json",
            "--beam-size",
            "2",
            wav,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / f"{Path(wav).stem}.json").read_text())
    words = [w for seg in doc["segments"] for w in seg["words"]]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts) and all(0 <= w["start"] <= w["end"] <= doc["duration"] + 1e-3 for w in words)


def test_prefix_cache_gives_the_same_loss_and_gradients(dump_dir, tiny_llm):
    """Training reuses the prompt prefix's keys/values: same loss and adapter gradients as the full sequence."""
    units = load_tokenizer(dump_dir / "units")
    model = SpeechLlm(speech_config(), stage1_model(units, tiny_llm), tiny_llm).eval()  # eval: no dropout
    batch = {k: v for k, v in _batch(dump_dir, model).items() if isinstance(v, torch.Tensor)}
    results = []
    for cached in (False, True):
        model.cache_prefix = cached
        model.zero_grad()
        out = model(**batch)
        out["loss"].backward()
        results.append((out["loss"].detach(), out["positions"], [p.grad.clone() for p in model.adapter.parameters()]))
    (loss_a, pos_a, grads_a), (loss_b, pos_b, grads_b) = results
    assert model._prefix_kv is not None and pos_a == pos_b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.slow  # end to end: in `make test`, not `make test-fast`
def test_smollm2_path_trains_and_decodes(dump_dir):
    """The embedded SmolLM2-135M-Instruct (chat template with a system turn, tied embeddings): the same
    code path as the GLMs. Units are rebuilt from its tokenizer; a few adapter steps lower the loss."""
    smol = load_llm(LlmConfig())  # converted once into the cache (~20 s), then ~0.3 s
    assert smol.hidden_size == 576 and not any(p.requires_grad for p in smol.model.parameters())
    units = load_tokenizer(
        build_llm_units(dump_dir / "text", "smollm2-135m-instruct", dump_dir / "smol_units", hf_tokenizer=smol.tokenizer)
    )
    model = SpeechLlm(
        SpeechLlmConfig(adapter=SAdapterConfig(hidden_dim=64, mode="expected_embedding")), stage1_model(units, smol), smol
    )
    prefix = smol.tokenizer.decode(model.prompt.prefix)
    assert prefix.startswith("<|im_start|>system\nYou are a speech recognizer.<|im_end|>") and "<speech>" in prefix
    from asr.training.data import FeatureDataset
    from asr.training.train_speech_llm import LlmTargets

    data = LlmTargets(FeatureDataset(dump_dir, units, frame_divisor=2, preload=True), model)
    batch = {k: v for k, v in data.collate([0, 1]).items() if isinstance(v, torch.Tensor)}
    losses = _train_steps(model, batch, lr=1e-3, steps=4)
    assert losses[-1] < losses[0], losses
    model.eval()
    results = model.generate(batch["feats"], batch["feat_lengths"], num_beams=2, max_new_extra=2)
    assert len(results) == 2 and all(isinstance(r["text"], str) for r in results)
    assert all(len(r["llm_ids"]) <= 2 + int(1.5 * len(r["cif_tokens"]) + 0.999) for r in results)  # token budget
