"""X-LLM stage 3 (asr/models/multimodal_llm.py, asr/training/train_multimodal.py) on tiny random models.

A tiny GLM, a random stage-1 CIF model over random "frozen-encoder features", a stage-2 speech LLM
with LoRA and a small-CNN image interface: what is checked is the plumbing (slots, labels, what is
trained, mixing, resume, persistence, decoding with/without a picture), not accuracy.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import torch
from conftest import tiny_stage1

from asr.data.batching import IGNORE_ID
from asr.io_utils import load_state_file, write_table
from asr.models.caption import STAGE_CONFIG_NAME, ImageCaptionModel, ImageStageConfig, image_prompt_config
from asr.models.cif_asr import CifAsrModel
from asr.models.image_x2l import IAdapterConfig, ImageEncoderConfig, ImageX2L, ImageX2LConfig, QFormerConfig
from asr.models.llm import LlmConfig, LoraSettings, load_llm, split_lora
from asr.models.multimodal_llm import CAPTION, JOINT, SPEECH, MultimodalConfig, MultimodalLlm
from asr.models.s_adapter import SAdapterConfig
from asr.models.speech_llm import SlotPrompt, SpeechLlm, SpeechLlmConfig, assemble_slots, slot, write_stage1_link
from asr.tokenizer import build_llm_units, load_tokenizer
from asr.training.train_cif import finalize_model_dir

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "mini_vis" / "local"))
import scenes as SC  # noqa: E402

WORDS = "two red circles blue squares on the left right top".split()
FEAT_DIM = 80  # fbank-sized, so that `asr transcribe` can run the exported model on real audio
TINY_IMAGE = ImageX2LConfig(
    encoder=ImageEncoderConfig(type="small_cnn", image_size=32, channels=[8, 16], dim=32, num_layers=1, num_heads=4),
    qformer=QFormerConfig(num_queries=4, hidden_size=32, num_layers=1, num_heads=4),
    adapter=IAdapterConfig(type="linear"),
)


@pytest.fixture(scope="module")
def tiny_llm():
    return load_llm(LlmConfig(name_or_path="tiny-glm"))


def _dump(d: Path, prefix: str, n: int, pictures: Path | None, rng) -> None:
    d.mkdir(parents=True)
    texts, frames, images = {}, {}, {}
    with kaldiio.WriteHelper(f"ark,scp:{d}/feats.ark,{d}/feats.scp") as w:
        for i in range(n):
            utt = f"{prefix}-{i:03d}"
            k = int(rng.integers(60, 90))
            w(utt, rng.standard_normal((k, FEAT_DIM)).astype(np.float32))
            texts[utt], frames[utt] = " ".join(rng.choice(WORDS, size=rng.integers(2, 5))), str(k)
            if pictures is not None:
                images[utt] = str(pictures / f"scene{i % 4}.png")
    write_table(d / "text", texts)
    write_table(d / "utt2num_frames", frames)
    if pictures is not None:
        write_table(d / "utt2image", images)
        write_table(d / "utt2image_mismatch", {u: str(pictures / f"scene{(i + 1) % 4}.png") for i, u in enumerate(images)})
    (d / "feat_info.json").write_text(
        json.dumps({"feature_type": "fbank", "options": {}, "dim": FEAT_DIM, "frame_rate_hz": 100.0})
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_llm):
    """Dump dirs (joint with pictures, speech only), captions, a stage-1 dir, a stage-2 final/ (with LoRA)
    and an image-stage final/, all on the tiny GLM."""
    root = tmp_path_factory.mktemp("stage3")
    rng = np.random.default_rng(0)
    pics = root / "pictures"
    pics.mkdir()
    for i in range(4):
        SC.render(SC.random_scene(random.Random(i), f"s{i}", image_size=32)).save(pics / f"scene{i}.png")
    _dump(root / "joint", "vis", 12, pics, rng)
    _dump(root / "joint_dev", "visdev", 4, pics, rng)
    _dump(root / "speech", "vis", 10, None, rng)  # the same ids as "joint": corpora may share them
    caps = root / "captions"
    caps.mkdir()
    write_table(caps / "images.scp", {f"cap{i}": str(pics / f"scene{i}.png") for i in range(4)})
    write_table(caps / "text", {f"cap{i}": " ".join(WORDS[i : i + 3]) for i in range(4)})
    # stage 1: random CIF model tied to the tiny GLM's units
    units = load_tokenizer(build_llm_units(root / "joint" / "text", "tiny-glm", root / "units", hf_tokenizer=tiny_llm.tokenizer))
    stage1 = tiny_stage1(units, FEAT_DIM, tiny_llm)
    stage1.save_pretrained(root / "stage1")
    finalize_model_dir(root / "stage1", units, json.loads((root / "joint" / "feat_info.json").read_text()))
    # stage 2: S-Adapter + LoRA (random: the plumbing is what is tested)
    sl_cfg = SpeechLlmConfig(
        llm=LlmConfig(name_or_path="tiny-glm", lora=LoraSettings(enabled=True, r=4, alpha=8)),
        adapter=SAdapterConfig(hidden_dim=32, mode="mlp"),
    )
    speech = SpeechLlm(sl_cfg, CifAsrModel.from_pretrained(root / "stage1"), load_llm(sl_cfg.llm))
    speech.save_pretrained(root / "stage2")
    write_stage1_link(root / "stage2", str((root / "stage1").resolve()))
    # image stage: a random interface aligned to the same LLM
    image_stage = ImageStageConfig(image_x2l=TINY_IMAGE, llm=LlmConfig(name_or_path="tiny-glm"), contrastive_weight=0.5)
    ImageCaptionModel(image_stage, tiny_llm).save_pretrained(root / "image")
    return root


def test_joint_prompt_slots_and_labels_token_by_token(tiny_llm):
    cfg = MultimodalConfig(system=None)
    prompt = SlotPrompt(tiny_llm.tokenizer, cfg.content(), cfg.system)
    assert prompt.slots == ["image", "speech"] and [isinstance(p, list) for p in prompt.pieces] == [
        True,
        False,
        True,
        False,
        True,
    ]
    text = tiny_llm.tokenizer.decode(prompt.pieces[2])
    assert text.startswith("</image>") and cfg.instruction in text and text.rstrip().endswith("<speech>")
    assert tiny_llm.tokenizer.decode(prompt.pieces[4]).startswith("</speech>")
    embed = tiny_llm.input_embeddings()
    H = embed.weight.shape[1]
    rows = [{"image": torch.randn(4, H), "speech": torch.randn(n, H)} for n in (3, 6)]
    targets = [[5, 6, prompt.eos_id], [7, prompt.eos_id]]
    for left in (False, True):
        batch = assemble_slots(embed, prompt, rows, targets, left_pad=left)
        n_text = sum(len(p) for p in prompt.pieces if isinstance(p, list))
        for b, row in enumerate(rows):
            n = n_text + 4 + row["speech"].shape[0] + len(targets[b])
            S = batch.inputs_embeds.shape[1]
            sl = slice(S - n, S) if left else slice(0, n)
            x, lab = batch.inputs_embeds[b, sl], batch.labels[b, sl]
            assert int(batch.attention_mask[b].sum()) == n and batch.position_ids[b, sl].tolist() == list(range(n))
            i = len(prompt.pieces[0])
            torch.testing.assert_close(x[i : i + 4], row["image"])
            j = i + 4 + len(prompt.pieces[2])
            torch.testing.assert_close(x[j : j + row["speech"].shape[0]], row["speech"])
            assert (lab[: n - len(targets[b])] == IGNORE_ID).all() and lab[n - len(targets[b]) :].tolist() == targets[b]
    with pytest.raises(ValueError, match=r"example 0: no embeddings for prompt slot\(s\) \['image'\]"):
        assemble_slots(embed, prompt, [{"speech": torch.randn(2, H)}], None, left_pad=True)
    assert slot("image") in cfg.content() and slot("speech") in cfg.content()


def test_stage3_trains_the_configured_parts_resumes_and_decodes_with_and_without_pictures(setup, tmp_path):
    from asr.decoding.llm_decode import decode_dump_dir
    from asr.models.loading import load_multimodal
    from asr.training.train_multimodal import train

    root = setup
    config = tmp_path / "joint.yaml"
    config.write_text(
        "multimodal: {train_qformer: true, train_lora: true, train_speech_adapter: false}\n"
        "mix: {joint: 0.4, joint_no_picture: 0.2, speech: 0.2, caption: 0.2, steps_per_epoch: 6, caption_batch_size: 2}\n"
        "train: {max_epochs: 1, max_steps: 4, lr: 0.01, warmup_steps: 1, max_frames_per_batch: 400,"
        " max_batch_size: 4, checkpoint_interval: 2, log_interval: 1, seed: 3}\n"
    )
    exp = tmp_path / "exp"
    args = (
        config,
        root / "stage2",
        root / "image",
        [str(root / "joint")],
        [str(root / "joint"), str(root / "speech")],
        root / "captions",
        root / "joint_dev",
        exp,
    )
    final = train(*args)
    ckpt = torch.load(sorted((exp / "checkpoints").glob("step_*.pt"))[-1], weights_only=False)
    names = set(ckpt["model"])
    assert ckpt["step"] == 4 and names and all("lora_" in k or k.startswith(("x2l.qformer.", "x2l.adapter.")) for k in names)
    assert any("lora_" in k for k in names) and any(k.startswith("x2l.qformer.") for k in names)
    # the S-Adapter and the image encoder were not touched
    s2, s3 = (load_state_file(d / "adapter.safetensors") for d in (root / "stage2", final / "speech_llm"))
    assert s2.keys() == s3.keys() and all(torch.equal(s2[k], s3[k]) for k in s2)
    l2, l3 = (load_state_file(d / "lora" / "adapter_model.safetensors") for d in (root / "stage2", final / "speech_llm"))
    assert l2.keys() == l3.keys() and any(not torch.equal(l2[k], l3[k]) for k in l2)  # LoRA trained on
    img0, img3 = ImageX2L.from_pretrained(root / "image"), ImageX2L.from_pretrained(final / "image_x2l")
    assert all(torch.equal(a, b) for a, b in zip(img0.encoder.state_dict().values(), img3.encoder.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(img0.qformer.state_dict().values(), img3.qformer.state_dict().values()))
    # every kind of batch came up: the mix is a function of the seed
    from asr.training.train_multimodal import MixedBatchSampler, Source

    class Fake:
        def __init__(self, n):
            self.n, self.e = n, 0

        def set_epoch(self, e):
            self.e = e

        def epoch_order(self):
            return [[i] for i in random.Random(self.e).sample(range(self.n), self.n)]

    srcs = lambda: [Source("a", None, Fake(3), 0.5), Source("b", None, Fake(2), 0.3), Source("c", None, Fake(5), 0.2)]  # noqa: E731
    mixed = MixedBatchSampler(srcs(), 40, seed=1)
    order = mixed.epoch_order()
    assert order == MixedBatchSampler(srcs(), 40, seed=1).epoch_order() and len(order) == 40
    assert {b[0] // 10**9 for b in order} == {0, 1, 2}
    mixed.set_epoch(1)
    assert mixed.epoch_order() != order
    # resume: 4 more steps continue the log
    train(*args, overrides={"max_steps": 6})
    steps = [int(line.split(",")[0]) for line in (exp / "train_log.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]
    # load and decode: true picture, another scene's picture, no picture
    model = load_multimodal(final)
    assert isinstance(model, MultimodalLlm) and model.x2l.config.freeze_encoder
    out = {}
    for table in ("utt2image", "utt2image_mismatch", None):
        d = tmp_path / f"decode_{table}"
        info = decode_dump_dir(final, root / "joint_dev", d, beam_size=2, batch_size=2, image_table=table)
        assert info["image"] == (table or "none") and info["utts"] == 4
        out[table] = (d / "hyp").read_text().splitlines()
        assert [line.split()[0] for line in out[table]] == [f"visdev-{i:03d}" for i in range(4)]
    feats = torch.randn(2, 70, FEAT_DIM)
    lengths = torch.tensor([70, 50])
    with torch.no_grad():
        pics = torch.rand(2, 3, 32, 32)
        a = model.generate(feats, lengths, images=pics)
        b = [model.generate(feats[i : i + 1, : int(lengths[i])], lengths[i : i + 1], images=pics[i : i + 1])[0] for i in range(2)]
    assert [r["llm_ids"] for r in a] == [r["llm_ids"] for r in b]  # batched with pictures = one by one
    # the loss depends on the picture: the image positions reach the LLM
    batch = {
        "kind": torch.tensor(JOINT),
        "feats": feats,
        "feat_lengths": lengths,
        "target_ids": torch.tensor([[5, 6, 2], [7, 2, IGNORE_ID]]),
        "target_lengths": torch.tensor([3, 2]),
    }
    with torch.no_grad():
        l1 = model(images=pics, **batch)["loss"]
        l2 = model(images=pics.flip(0), **batch)["loss"]
        l3 = model(**{**batch, "kind": torch.tensor(SPEECH)})["loss"]
        lc = model(
            kind=torch.tensor(CAPTION), images=pics, target_ids=batch["target_ids"], target_lengths=batch["target_lengths"]
        )["loss"]
    assert l1 != l2 and l1 != l3 and torch.isfinite(lc)
    info = decode_dump_dir(final, root / "joint_dev", tmp_path / "two", image_table="utt2image", max_utts=2)
    assert info["utts"] == 2 and info["max_utts"] == 2
    assert [line.split()[0] for line in (tmp_path / "two" / "ref").read_text().splitlines()] == ["visdev-000", "visdev-002"]
    assert not (tmp_path / "two" / "missing_feats").exists()  # the others were not asked for: not scored as deletions
    with pytest.raises(ValueError, match="speech-only"):
        decode_dump_dir(root / "stage2", root / "joint_dev", tmp_path / "bad", image_table="utt2image")


def test_stage3_refuses_an_image_interface_of_another_llm(setup, tmp_path):
    import shutil

    from asr.training.train_multimodal import build_multimodal

    other = tmp_path / "image_other"
    shutil.copytree(setup / "image", other)
    d = json.loads((other / STAGE_CONFIG_NAME).read_text())
    d["llm"]["name_or_path"] = "tiny-glm4"
    (other / STAGE_CONFIG_NAME).write_text(json.dumps(d))
    with pytest.raises(ValueError, match="aligned to 'tiny-glm4'"):
        build_multimodal(MultimodalConfig(), setup / "stage2", other)
    with pytest.raises(ValueError, match="trains nothing"):
        build_multimodal(
            MultimodalConfig(train_qformer=False, train_image_adapter=False, train_lora=False), setup / "stage2", setup / "image"
        )


def test_every_model_dir_round_trips_through_load_model_dir(setup, tmp_path):
    """Stage 1, stage 2, the image stage, a bare image interface and stage 3: save_pretrained ->
    load_model_dir gives the same class with the same tensors, by the kind in the dir's config; a
    dir that is none of them is refused with its name."""
    from asr.models.loading import dir_kind, load_model_dir
    from asr.models.speech_llm import stage1_dir_of
    from asr.training.train_multimodal import build_multimodal

    def same_tensors(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    stage3 = build_multimodal(MultimodalConfig(), setup / "stage2", setup / "image")
    stage3.save_pretrained(tmp_path / "stage3")
    assert stage1_dir_of(tmp_path / "stage3" / "speech_llm") == (setup / "stage1").resolve()
    ImageX2L.from_pretrained(setup / "image").save_pretrained(tmp_path / "x2l")
    expected = {
        setup / "stage1": ("cif_asr", CifAsrModel),
        setup / "stage2": ("speech_llm", SpeechLlm),
        setup / "image": ("image_caption", ImageCaptionModel),
        tmp_path / "x2l": ("image_x2l", ImageX2L),
    }
    for path, (kind, cls) in expected.items():
        assert dir_kind(path) == kind
        assert type(load_model_dir(path)) is cls
    assert same_tensors(load_model_dir(setup / "stage1"), CifAsrModel.from_pretrained(setup / "stage1"))
    assert same_tensors(load_model_dir(tmp_path / "x2l"), ImageX2L.from_pretrained(setup / "image"))
    image = load_model_dir(setup / "image")
    assert image.config.contrastive_weight == 0.5 and hasattr(image, "itc_proj")  # loss settings and head back
    speech = load_model_dir(setup / "stage2")
    adapter, lora = split_lora(speech.trainable_state_dict())
    assert lora, "stage 2 of the setup trains LoRA"
    for file, part in (("adapter.safetensors", adapter), ("lora/adapter_model.safetensors", lora)):
        saved = load_state_file(setup / "stage2" / file)
        assert saved.keys() == part.keys() and all(torch.equal(saved[k], v) for k, v in part.items())
    assert dir_kind(tmp_path / "stage3") == "multimodal"
    again = load_model_dir(tmp_path / "stage3")
    assert type(again) is MultimodalLlm and same_tensors(again, stage3)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty: not a model dir"):
        load_model_dir(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="missing: no such model dir"):
        load_model_dir(tmp_path / "missing")


def test_lora_is_kept_in_peft_adapter_format(setup):
    """A stage-2 dir's lora/ is what peft writes: PeftModel.from_pretrained reads it onto the bare LLM
    and gets the LoRA tensors this toolkit loads (peft's fresh init of lora_A differs from them)."""
    from peft import PeftModel

    from asr.models.loading import load_model_dir

    assert json.loads((setup / "stage2" / "lora" / "adapter_config.json").read_text())["r"] == 4
    theirs = PeftModel.from_pretrained(load_llm(LlmConfig(name_or_path="tiny-glm")).model, setup / "stage2" / "lora")
    theirs = {k: v for k, v in theirs.state_dict().items() if "lora_" in k}
    mine = {k: v for k, v in load_model_dir(setup / "stage2").llm.state_dict().items() if "lora_" in k}
    assert mine and mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    fresh = {
        k: v
        for k, v in load_llm(LlmConfig(name_or_path="tiny-glm", lora=LoraSettings(enabled=True, r=4, alpha=8)))
        .model.state_dict()
        .items()
        if "lora_A" in k
    }
    assert any(not torch.equal(fresh[k], mine[k]) for k in fresh)


def test_dirs_written_before_kinds_and_safetensors_still_load(setup, tmp_path):
    """Model dirs as earlier versions wrote them (no ``kind``, torch weights files, LoRA tensors inside
    adapter.pt) load as before, to the same tensors."""
    import shutil

    from asr.models.loading import dir_kind, load_model_dir

    old = tmp_path / "old"
    for name in ("stage1", "stage2", "image"):
        shutil.copytree(setup / name, old / name)
    for config in old.glob("*/*.json"):
        d = json.loads(config.read_text())
        if d.pop("kind", None) is not None:
            config.write_text(json.dumps(d))
    torch.save(load_state_file(old / "stage1" / "model.safetensors"), old / "stage1" / "model.pt")
    (old / "stage1" / "model.safetensors").unlink()
    # stage 2: the adapter and LoRA tensors in one adapter.pt, under the model's own names
    new_speech = load_model_dir(setup / "stage2")
    torch.save(new_speech.trainable_state_dict(), old / "stage2" / "adapter.pt")
    (old / "stage2" / "adapter.safetensors").unlink()
    shutil.rmtree(old / "stage2" / "lora")
    write_stage1_link(old / "stage2", str((old / "stage1").resolve()))
    # the image stage before its loss settings and heads were kept: LLM and prompt only
    torch.save(load_state_file(old / "image" / "image_x2l.safetensors"), old / "image" / "image_x2l.pt")
    for f in ("image_x2l.safetensors", "itc_head.safetensors"):
        (old / "image" / f).unlink()
    d = json.loads((old / "image" / STAGE_CONFIG_NAME).read_text())
    (old / "image" / STAGE_CONFIG_NAME).write_text(json.dumps({"llm": d["llm"], "prompt": d["prompt"]}))

    assert [dir_kind(old / n) for n in ("stage1", "stage2", "image")] == ["cif_asr", "speech_llm", "image_caption"]
    for name in ("stage1", "stage2"):
        a, b = load_model_dir(old / name).state_dict(), load_model_dir(setup / name).state_dict()
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    image = load_model_dir(old / "image")
    assert image.config.contrastive_weight == 0.0 and not hasattr(image, "itc_proj")  # no head: that loss is off
    assert all(torch.equal(v, load_model_dir(setup / "image").x2l.state_dict()[k]) for k, v in image.x2l.state_dict().items())
    # a config of another kind is refused, naming the file
    d = json.loads((setup / "stage2" / "speech_llm.json").read_text())
    (old / "stage2" / "speech_llm.json").write_text(json.dumps({**d, "kind": "multimodal"}))
    with pytest.raises(ValueError, match="speech_llm.json: a multimodal model dir, not speech_llm"):
        SpeechLlm.from_pretrained(old / "stage2", old / "stage1")


@pytest.mark.slow
def test_export_and_transcribe_with_a_picture(setup, espeak_dir, tmp_path):
    """A stage-3 dir exports into one movable dir; `asr transcribe --image` reads the picture (a different
    picture can change the words, the same one gives the same words); bad uses are refused clearly."""
    import shutil
    import subprocess

    from asr.export import export_model
    from asr.training.train_multimodal import build_multimodal

    model = build_multimodal(MultimodalConfig(), setup / "stage2", setup / "image")
    model.save_pretrained(tmp_path / "final")
    exported = export_model(tmp_path / "final", tmp_path / "model")
    moved = tmp_path / "moved"
    shutil.move(exported, moved)  # relative links only
    assert json.loads((moved / "export.json").read_text())["kind"] == "multimodal"
    wav = next(p for p in (espeak_dir / "wav.scp").read_text().split() if p.endswith(".wav"))
    asr = str(Path(sys.executable).parent / "asr")

    def run(*extra):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        proc = subprocess.run(
            [asr, "transcribe", "--model", str(moved), "-o", str(out), "-f", "json", *extra, wav], capture_output=True, text=True
        )
        return proc, out

    texts = []
    for pic in ("scene0.png", "scene0.png", None):
        proc, out = run(*(["--image", str(setup / "pictures" / pic)] if pic else []))
        assert proc.returncode == 0, proc.stderr
        texts.append(json.loads((out / f"{Path(wav).stem}.json").read_text())["text"])
    assert texts[0] == texts[1]
    proc, out = run("--image", str(setup / "pictures" / "scene0.png"), "--picture-guidance", "2")
    assert proc.returncode == 0, proc.stderr
    assert isinstance(json.loads((out / f"{Path(wav).stem}.json").read_text())["text"], str)
    proc, _ = run("--picture-guidance", "2")
    assert proc.returncode != 0 and "picture guidance needs a picture (--image)" in proc.stderr
    proc, _ = run("--image", str(tmp_path / "missing.png"))
    assert proc.returncode != 0 and "missing.png: cannot read the picture" in proc.stderr
    stage2 = export_model(setup / "stage2", tmp_path / "model2")
    proc = subprocess.run(
        [
            asr,
            "transcribe",
            "--model",
            str(stage2),
            "-o",
            str(tmp_path / "o2"),
            "--image",
            str(setup / "pictures" / "scene0.png"),
            wav,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "speech-only model: --image needs a stage-3" in proc.stderr


def test_stage3_lora_learns_at_its_own_rate(setup, tmp_path):
    from asr.training.train_multimodal import build_multimodal
    from asr.training.trainer import TrainConfig, Trainer

    with pytest.raises(ValueError, match="lora_lr_scale"):
        MultimodalConfig(lora_lr_scale=0)
    model = build_multimodal(MultimodalConfig(lora_lr_scale=0.1), setup / "stage2", setup / "image", device="cpu")
    groups = model.optimizer_groups()
    lora = {id(p) for n, p in model.llm.named_parameters() if "lora_" in n}
    assert [g["lr_scale"] for g in groups] == [1.0, 0.1]
    assert {id(p) for p in groups[1]["params"]} == lora and not lora & {id(p) for p in groups[0]["params"]}
    assert {id(p) for g in groups for p in g["params"]} == {id(p) for p in model.parameters() if p.requires_grad}
    trainer = Trainer(model, [], None, TrainConfig(lr=0.02, warmup_steps=1), tmp_path / "exp", trainable=groups)
    lrs = [g["lr"] for g in trainer.optimizer.param_groups]
    assert lrs[1] == pytest.approx(0.1 * lrs[0]) and lrs[0] > 0
    assert len(trainer.trained_params) == sum(len(g["params"]) for g in groups)  # clipping sees both groups
    model_no_lora = build_multimodal(MultimodalConfig(train_lora=False), setup / "stage2", setup / "image", device="cpu")
    assert [g["lr_scale"] for g in model_no_lora.optimizer_groups()] == [1.0]


def test_picture_guidance_is_the_contrast_of_the_two_prompts_token_by_token(setup, tmp_path):
    """Greedy decoding with picture guidance W picks, at every step, the argmax of
    log p(. | picture, speech) + W (log p(. | picture, speech) - log p(. | speech)), both recomputed here
    without a KV cache; and the option's misuses are refused."""
    from asr.decoding.llm_decode import decode_dump_dir

    root = setup
    speech = SpeechLlm.from_pretrained(root / "stage2", root / "stage1")
    model = MultimodalLlm(
        MultimodalConfig(),
        speech,
        ImageX2L.from_pretrained(root / "image"),
        image_prompt_config(),
        stage1_dir=(root / "stage1").resolve(),
    ).eval()
    torch.manual_seed(1)
    feats, lengths, pics = torch.randn(2, 70, FEAT_DIM), torch.tensor([70, 55]), torch.rand(2, 3, 32, 32)
    weight = 3.0
    guided = model.generate(feats, lengths, images=pics, picture_guidance=weight)
    embed = model.llm.get_input_embeddings()
    differs = False
    with torch.no_grad():
        for b in range(2):
            f, n, p = feats[b : b + 1, : int(lengths[b])], lengths[b : b + 1], pics[b : b + 1]
            joint, _ = model._assemble(JOINT, f, n, p, None, left_pad=True)
            alone, _ = model._assemble(SPEECH, f, n, None, None, left_pad=True)
            ids = guided[b]["llm_ids"]
            assert ids, "guided decoding wrote nothing"
            for i, token in enumerate(ids):
                prev = embed(torch.tensor([ids[:i]], dtype=torch.long))
                lp = [
                    model.llm(inputs_embeds=torch.cat([x.inputs_embeds, prev], 1)).logits[0, -1].float().log_softmax(-1)
                    for x in (joint, alone)
                ]
                scores = lp[0] + weight * (lp[0] - lp[1])
                assert int(scores.argmax()) == token, f"utterance {b}, step {i}"
                differs |= int(lp[0].argmax()) != token
    assert differs, "weight 3 changed no token choice against the picture prompt alone"
    with pytest.raises(ValueError, match="needs pictures"):
        model.generate(feats, lengths, picture_guidance=weight)
    with pytest.raises(ValueError, match="greedy"):
        model.generate(feats, lengths, images=pics, num_beams=2, picture_guidance=weight)
    model.save_pretrained(tmp_path / "mm")
    info = decode_dump_dir(
        tmp_path / "mm", root / "joint_dev", tmp_path / "dec", image_table="utt2image", picture_guidance=weight, max_utts=2
    )
    assert info["picture_guidance"] == weight and info["utts"] == 2
    with pytest.raises(ValueError, match="image table"):
        decode_dump_dir(tmp_path / "mm", root / "joint_dev", tmp_path / "bad", picture_guidance=weight)


def test_picture_table_resizes_to_the_encoders_picture_size(tmp_path):
    """Stage 3 and batch decoding see pictures at the size the image encoder was built for, as
    `asr transcribe --image` does; without a size, pictures of two sizes are an error naming the table."""
    from PIL import Image

    from asr.data.image import PictureTable

    paths = {}
    for utt, side in (("u1", 48), ("u2", 64)):
        paths[utt] = tmp_path / f"{utt}.png"
        Image.new("RGB", (side, side), (255, 0, 0)).save(paths[utt])
    write_table(tmp_path / "utt2image", {u: str(p) for u, p in paths.items()})
    size = ImageX2L(TINY_IMAGE, llm_hidden_size=16).picture_size()
    assert size == (32, 32)
    pics = PictureTable(tmp_path / "utt2image", size=size).pictures(["u2", "u1"])
    assert pics.shape == (2, 3, 32, 32) and torch.allclose(pics[:, 0], torch.ones(2, 32, 32))
    assert PictureTable(tmp_path / "utt2image", size=(24, 40)).pictures(["u1"]).shape == (1, 3, 24, 40)  # (h, w)
    with pytest.raises(ValueError, match="utt2image: the pictures differ in size"):
        PictureTable(tmp_path / "utt2image")
