"""Single-machine scale features of the trainer: bf16 autocast on CPU, fp16's CUDA requirement,
batch-reading worker processes over features read lazily from several ark files, bucket shuffling
(deterministic, exact resume), the rank shares of the distributed batch sampler, checkpoint
averaging (stage 1 full state dicts, stage 2 trainable tensors only) and the stage-2 gradient
checkpointing flag.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import tiny_train_config

from asr.data.batching import FrameBatchSampler
from asr.io_utils import load_state_file, write_table
from asr.models.cif_asr import CifAsrConfig, CifAsrModel, SpecAugmentConfig
from asr.training.data import BatchLoader, FeatureDataset
from asr.training.distributed import DistributedBatchSampler
from asr.training.trainer import TrainConfig, Trainer

FEAT_DIM = 12
WORDS = "the cat sat on a mat and dog ran to red blue big small".split()


def _write_dump(d: Path, n_utts: int = 18, n_arks: int = 2) -> Path:
    """Random features in ``n_arks`` ark files behind one feats.scp (as Kaldi's parallel jobs leave them)."""
    rng = np.random.default_rng(0)
    texts, frames, scp = {}, {}, []
    per_ark = -(-n_utts // n_arks)
    for a in range(n_arks):
        with kaldiio.WriteHelper(f"ark,scp:{d}/feats.{a + 1}.ark,{d}/feats.{a + 1}.scp") as w:
            for i in range(a * per_ark, min(n_utts, (a + 1) * per_ark)):
                utt = f"spk0-{i:03d}"
                n = int(rng.integers(40, 110))
                w(utt, rng.standard_normal((n, FEAT_DIM)).astype(np.float32))
                texts[utt], frames[utt] = " ".join(rng.choice(WORDS, size=rng.integers(2, 5))), str(n)
        scp.append((d / f"feats.{a + 1}.scp").read_text())
    (d / "feats.scp").write_text("".join(scp))
    write_table(d / "text", texts)
    write_table(d / "utt2num_frames", frames)
    (d / "feat_info.json").write_text(
        json.dumps({"feature_type": "whisper_encoder", "options": {}, "dim": FEAT_DIM, "frame_rate_hz": 50.0})
    )
    return d


@pytest.fixture(scope="module")
def dump(tmp_path_factory) -> Path:
    from asr.tokenizer import train_tokenizer

    d = _write_dump(tmp_path_factory.mktemp("dump"))
    train_tokenizer(d / "text", d / "tok", vocab_size=24, model_type="bpe")
    return d


def _model(vocab: int, dropout: float = 0.1) -> CifAsrModel:
    torch.manual_seed(0)
    return CifAsrModel(
        CifAsrConfig(
            vocab_size=vocab,
            feat_dim=FEAT_DIM,
            encoder_type="frozen",
            frozen_pool=2,
            d_model=16,
            cformer_layers=1,
            cformer_heads=2,
            cformer_ffn=32,
            dropout=dropout,
            specaug=SpecAugmentConfig(time_masks=1, time_mask_max=8, freq_masks=1, freq_mask_max=3),
        )
    )


def _data(dump: Path, **sampler_kw):
    from asr.tokenizer import load_tokenizer

    units = load_tokenizer(dump / "tok.model")
    ds = FeatureDataset(dump, units, frame_divisor=2, preload=False)
    sampler = FrameBatchSampler([u.num_frames for u in ds.utts], 300, seed=3, **sampler_kw)
    return ds, sampler, len(units)


def _cfg(**over) -> TrainConfig:
    return tiny_train_config(**over)


def _final_params(exp: Path, step: int) -> dict:
    return torch.load(exp / "checkpoints" / f"step_{step:08d}.pt", weights_only=False)["model"]


# ---- precision ----------------------------------------------------------------------------------
def test_bf16_autocast_trains_on_cpu(dump, tmp_path):
    ds, sampler, vocab = _data(dump)
    model = _model(vocab)
    seen = []
    model.proj[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, sampler, ds.collate, _cfg(precision="bf16"), tmp_path).train()
    assert seen and all(dt == torch.bfloat16 for dt in seen)  # the linear layers ran in bf16
    params = _final_params(tmp_path, 4)
    assert all(torch.isfinite(v).all() for v in params.values() if v.is_floating_point())
    assert params["proj.0.weight"].dtype == torch.float32  # master weights stay fp32
    assert not torch.equal(params["proj.0.weight"], start["proj.0.weight"])
    with (tmp_path / "train_log.csv").open() as f:
        losses = [float(r["loss"]) for r in csv.DictReader(f)]
    assert len(losses) == 4 and all(np.isfinite(losses))


def test_precision_and_config_errors(tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        Trainer(_model(10), FrameBatchSampler([50], 100), lambda i: {}, _cfg(precision="fp16"), tmp_path)
    with pytest.raises(ValueError, match="precision 'fp8'"):
        TrainConfig(precision="fp8")
    with pytest.raises(ValueError, match="unknown key.*in train config"):
        TrainConfig.from_dict({"precison": "bf16"})
    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=-1)


# ---- workers, lazy features from several arks -----------------------------------------------------
def test_workers_give_the_same_batches_and_training_as_in_process(dump, tmp_path):
    ds, sampler, vocab = _data(dump)
    assert len({u.feats_ref.split(":")[0] for u in ds.utts}) == 2  # read lazily from two ark files
    assert ds._cache is None
    order = sampler.epoch_order()
    inline = list(BatchLoader(ds.collate, 0)(order))
    loader = BatchLoader(ds.collate, 2)
    for _ in range(2):  # the loader is reused across passes (epochs)
        workers = list(loader(order))
        assert len(workers) == len(inline)
        for a, b in zip(inline, workers):
            assert a["utt_ids"] == b["utt_ids"]
            for k in ("feats", "feat_lengths", "targets", "target_lengths"):
                assert torch.equal(a[k], b[k]), k
    # training with workers (dropout + SpecAugment on) ends bit-identical: the loader leaves the global RNG alone
    results, steps = [], len(sampler) + 2  # into the second epoch: the workers serve another pass
    for n in (0, 2):
        exp = tmp_path / f"w{n}"
        Trainer(_model(vocab), sampler, ds.collate, _cfg(num_workers=n, max_steps=steps), exp).train()
        results.append(_final_params(exp, steps))
    for k in results[0]:
        assert torch.equal(results[0][k], results[1][k]), k


# ---- batching -----------------------------------------------------------------------------------
def test_bucket_shuffle_is_deterministic_and_varies_batches():
    rng = np.random.default_rng(1)
    lengths = [int(x) for x in rng.integers(20, 200, size=120)]
    plain = FrameBatchSampler(lengths, 800, seed=5)
    bucket = FrameBatchSampler(lengths, 800, seed=5, bucket_shuffle=True, num_buckets=4)
    again = FrameBatchSampler(lengths, 800, seed=5, bucket_shuffle=True, num_buckets=4)
    contents = []
    for epoch in range(2):
        for s in (plain, bucket, again):
            s.set_epoch(epoch)
        order = bucket.epoch_order()
        assert order == again.epoch_order()  # a function of seed + epoch
        assert sorted(i for b in order for i in b) == list(range(120))  # each utterance once
        assert all(max(lengths[i] for i in b) * len(b) <= 800 or len(b) == 1 for b in order)
        contents.append({tuple(sorted(b)) for b in order})
        # batches stay inside a length bucket: a batch spans at most a quarter of the sorted utterances
        rank = {i: r for r, i in enumerate(sorted(range(120), key=lambda i: lengths[i]))}
        assert all(max(rank[i] for i in b) - min(rank[i] for i in b) < 30 for b in order)
    assert contents[0] != contents[1]  # batches re-formed each epoch
    plain.set_epoch(0)
    fixed0 = {tuple(sorted(b)) for b in plain.epoch_order()}
    plain.set_epoch(1)
    assert fixed0 == {tuple(sorted(b)) for b in plain.epoch_order()}  # default: same batches, new order


def test_bucket_shuffle_resumes_exactly(dump, tmp_path):
    ds, sampler, vocab = _data(dump, bucket_shuffle=True, num_buckets=3)
    steps = 7  # more than one epoch
    Trainer(_model(vocab), sampler, ds.collate, _cfg(max_steps=steps, bucket_shuffle=True), tmp_path / "full").train()
    Trainer(_model(vocab), sampler, ds.collate, _cfg(max_steps=3, bucket_shuffle=True), tmp_path / "cut").train()
    assert torch.load(tmp_path / "cut" / "checkpoints" / "step_00000003.pt", weights_only=False)["batch_in_epoch"] > 0
    Trainer(_model(vocab), sampler, ds.collate, _cfg(max_steps=steps, bucket_shuffle=True), tmp_path / "cut").train()
    a, b = _final_params(tmp_path / "full", steps), _final_params(tmp_path / "cut", steps)
    for k in a:
        assert torch.equal(a[k], b[k]), k


class _Fixed:
    def __init__(self, n):
        self.batches = [[i] for i in range(n)]

    def set_epoch(self, epoch):
        pass

    def epoch_order(self):
        return list(self.batches)


def test_distributed_batch_sampler_shares():
    shares = [DistributedBatchSampler(_Fixed(5), 2, r) for r in range(2)]
    assert [s.local_batches() for s in shares] == [[[0], [2], [4]], [[1], [3], [0]]]  # padded from the start
    assert [s.local_batches(start=2) for s in shares] == [[[2], [4]], [[3], [0]]]
    assert len(shares[0]) == len(shares[1]) == 3
    cut = [DistributedBatchSampler(_Fixed(5), 2, r, pad=False).local_batches() for r in range(2)]
    assert cut == [[[0], [2]], [[1], [3]]]
    # a checkpoint written by 2 ranks (start 4) continued by 3
    assert [DistributedBatchSampler(_Fixed(9), 3, r).local_batches(start=4) for r in range(3)] == [
        [[4], [7]],
        [[5], [8]],
        [[6], [0]],
    ]
    with pytest.raises(ValueError, match="rank 2 outside"):
        DistributedBatchSampler(_Fixed(3), 2, 2)


# ---- checkpoint averaging -----------------------------------------------------------------------
def _stage1_config(path: Path) -> Path:
    path.write_text("""
model: {encoder_type: frozen, frozen_pool: 2, d_model: 16, cformer_layers: 1, cformer_heads: 2, cformer_ffn: 32}
train: {max_epochs: 50, lr: 0.003, warmup_steps: 2, max_frames_per_batch: 300, checkpoint_interval: 1,
        keep_checkpoints: 5, log_interval: 1, num_threads: 1, device: cpu}
""")
    return path


def test_average_checkpoints_stage1(dump, tmp_path, capsys):
    import shutil

    from asr.cli.main import main

    exp = tmp_path / "exp"
    assert (
        main(
            [
                "train",
                "--config",
                str(_stage1_config(tmp_path / "c.yaml")),
                "--train-dir",
                str(dump),
                "--tokenizer",
                str(dump / "tok.model"),
                "--exp-dir",
                str(exp),
                "--max-steps",
                "4",
            ]
        )
        == 0
    )
    ckpt = {s: _final_params(exp, s) for s in (3, 4)}
    # one checkpoint: the model dir holds exactly its tensors
    assert main(["average-checkpoints", "--exp-dir", str(exp), "--num", "1", "--out", str(tmp_path / "one")]) == 0
    one = load_state_file(tmp_path / "one" / "model.safetensors")
    assert one.keys() == ckpt[4].keys() and all(torch.equal(one[k], ckpt[4][k]) for k in one)
    # two identical checkpoints average to that checkpoint
    shutil.copyfile(exp / "checkpoints" / "step_00000004.pt", exp / "checkpoints" / "step_00000099.pt")
    assert main(["average-checkpoints", "--exp-dir", str(exp), "--steps", "4", "99", "--out", str(tmp_path / "same")]) == 0
    same = load_state_file(tmp_path / "same" / "model.safetensors")
    assert all(torch.equal(same[k], ckpt[4][k]) for k in same)
    (exp / "checkpoints" / "step_00000099.pt").unlink()
    # two different ones: the mean, element-wise
    assert main(["average-checkpoints", "--exp-dir", str(exp), "--num", "2", "--out", str(tmp_path / "avg")]) == 0
    assert "steps [3, 4]" in capsys.readouterr().out
    avg = load_state_file(tmp_path / "avg" / "model.safetensors")
    differ = [k for k in avg if avg[k].is_floating_point() and not torch.equal(ckpt[3][k], ckpt[4][k])]
    assert differ
    for k in avg:
        if avg[k].is_floating_point():
            torch.testing.assert_close(avg[k], (ckpt[3][k] + ckpt[4][k]) / 2, atol=1e-7, rtol=1e-6, msg=k)
    assert json.loads((tmp_path / "avg" / "averaged.json").read_text())["steps"] == [3, 4]
    # a loadable, decodable model dir (config and tokenizer copied from final/)
    model = CifAsrModel.from_pretrained(tmp_path / "avg").eval()
    assert (tmp_path / "avg" / "tokenizer.model").exists() and (tmp_path / "avg" / "feat_info.json").exists()
    feats = torch.randn(1, 60, FEAT_DIM)
    assert len(model.recognize(feats, torch.tensor([60]))["tokens"]) == 1
    assert not list(tmp_path.glob(".avg.tmp*"))
    # errors name what is wrong
    assert main(["average-checkpoints", "--exp-dir", str(exp), "--steps", "77", "--out", str(tmp_path / "x")]) == 1
    assert "no checkpoint of step(s) [77]" in capsys.readouterr().err
    assert main(["average-checkpoints", "--exp-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 1
    assert not (tmp_path / "x").exists()


# ---- stage 2: trainable-only checkpoints, gradient checkpointing -----------------------------------
@pytest.fixture(scope="module")
def stage2(tmp_path_factory):
    """A dump dir with tiny-GLM units, a stage-1 model dir tied to the tiny GLM, and the tiny GLM."""
    from asr.models.llm import LlmConfig, load_llm
    from asr.tokenizer import build_llm_units, load_tokenizer
    from asr.training.train_cif import finalize_model_dir

    root = tmp_path_factory.mktemp("stage2")
    (root / "dump").mkdir()
    d = _write_dump(root / "dump", n_utts=8, n_arks=1)
    llm = load_llm(LlmConfig(name_or_path="tiny-glm"))
    units = load_tokenizer(build_llm_units(d / "text", "tiny-glm", root / "units", hf_tokenizer=llm.tokenizer))
    torch.manual_seed(0)
    stage1 = CifAsrModel(
        CifAsrConfig(
            vocab_size=len(units),
            feat_dim=FEAT_DIM,
            encoder_type="frozen",
            frozen_pool=2,
            d_model=16,
            cformer_layers=1,
            cformer_heads=2,
            cformer_ffn=32,
            ctc_weight=0.0,
            classifier="tied",
            tied_dim=llm.hidden_size,
        )
    )
    stage1.classifier.set_embeddings(llm.input_embeddings().weight.detach()[torch.tensor(units.llm_ids)])
    stage1.save_pretrained(root / "stage1")
    finalize_model_dir(root / "stage1", units, json.loads((d / "feat_info.json").read_text()))
    return d, root / "stage1", llm


def test_gradient_checkpointing_reaches_the_llm(stage2):
    from asr.models.speech_llm import _checkpointing
    from asr.tokenizer import load_tokenizer
    from asr.training.train_speech_llm import LlmTargets, build_speech_llm

    d, stage1_dir, _ = stage2
    config = {"speech_llm": {"llm": {"name_or_path": "tiny-glm"}, "adapter": {"hidden_dim": 32}}}
    grads = []
    for flag in (False, True):
        torch.manual_seed(0)
        model = build_speech_llm(config, stage1_dir, TrainConfig(gradient_checkpointing=flag))
        assert _checkpointing(model.llm) is flag
        model.train()
        assert model.llm.training is flag  # checkpointing acts in train mode only; a frozen LLM stays in eval otherwise
        assert (model.prefix_cache(2) is None) is flag  # recomputed layers cannot use the cached prompt prefix
        data = LlmTargets(FeatureDataset(d, load_tokenizer(stage1_dir / "tokenizer.llm"), frame_divisor=2, preload=True), model)
        batch = data.collate([0, 1, 2])
        out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        out["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-6, rtol=1e-5, msg=n)


def test_stage2_training_with_checkpointing_and_averaging(stage2, tmp_path):
    from asr.models.loading import load_speech_llm
    from asr.training.train_speech_llm import train
    from asr.training.trainer import average_checkpoints

    d, stage1_dir, _ = stage2
    config = tmp_path / "s2.yaml"
    config.write_text(
        "speech_llm:\n  llm: {name_or_path: tiny-glm, device: auto}\n  adapter: {hidden_dim: 32}\n"
        "train: {max_steps: 3, lr: 0.01, warmup_steps: 1, max_frames_per_batch: 300, checkpoint_interval: 1,"
        " log_interval: 1, num_threads: 1, device: cpu, gradient_checkpointing: true, num_workers: 1}\n"
    )
    exp = tmp_path / "exp"
    train(config, stage1_dir, d, None, exp)
    c2, c3 = _final_params(exp, 2), _final_params(exp, 3)
    assert c3 and all(k.startswith("adapter.") for k in c3)  # trainable tensors only
    out = average_checkpoints(exp, tmp_path / "avg", num=2)
    avg = load_state_file(out / "adapter.safetensors")
    assert avg.keys() == c3.keys()
    for k in avg:
        torch.testing.assert_close(avg[k], (c2[k] + c3[k]) / 2, atol=1e-7, rtol=1e-6, msg=k)
    assert (out / "stage1.json").exists() and (out / "speech_llm.json").exists()
    # trained on train.device (cpu); the model dir keeps the LLM device the config asked for
    assert json.loads((exp / "final" / "speech_llm.json").read_text())["llm"]["device"] == "auto"
    model = load_speech_llm(out)  # loadable like final/
    assert torch.equal(model.trainable_state_dict()[next(iter(avg))], avg[next(iter(avg))])


# ---- merged dump dirs ---------------------------------------------------------------------------
@pytest.mark.parametrize("preload", [False, True])
def test_merged_datasets_keep_corpora_apart(dump, preload):
    """Two dump dirs with the same utterance ids: the merge names them <k>:<id> and collates each
    utterance's own features; the parts are left unchanged."""
    from asr.tokenizer import load_tokenizer

    units = load_tokenizer(dump / "tok.model")
    a = FeatureDataset(dump, units, frame_divisor=2, preload=preload)
    b = FeatureDataset(dump, units, frame_divisor=2, preload=preload)
    a_ids = [u.utt_id for u in a.utts]
    merged = FeatureDataset.merge([a, b])
    assert FeatureDataset.merge([a]) is a
    assert [u.utt_id for u in merged.utts] == [f"0:{u}" for u in a_ids] + [f"1:{u}" for u in a_ids]
    assert [u.utt_id for u in a.utts] == a_ids and (merged._cache is not None) == preload
    n = len(a)
    batch = merged.collate([1, n + 1])
    single = a.collate([1])
    assert batch["utt_ids"] == [f"0:{a_ids[1]}", f"1:{a_ids[1]}"]
    length = int(single["feat_lengths"][0])
    for row in (0, 1):
        assert torch.equal(batch["feats"][row, :length], single["feats"][0, :length])
        assert torch.equal(
            batch["targets"][row, : int(batch["target_lengths"][row])], single["targets"][0, : int(single["target_lengths"][0])]
        )
