"""Tests of the image interface (asr/models/image_x2l.py) and the image-caption stage (asr/training/train_image.py).

Pictures come from recipes/mini_vis/local/scenes.py; the LLM is the random tiny GLM ("tiny-glm"),
so what is checked is the plumbing (shapes, positions, persistence, that training lowers the
loss), not caption quality.
"""

from __future__ import annotations

import dataclasses
import json
import random
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from asr.io_utils import load_state_file
from asr.models.image_x2l import IAdapterConfig, ImageEncoderConfig, ImageX2L, ImageX2LConfig, QFormerConfig

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "mini_vis" / "local"))

import scenes as SC  # noqa: E402

TINY_ENCODER = dict(type="small_cnn", channels=[8, 16, 16], dim=32, num_layers=1, num_heads=4)


def _config(num_queries=8, hidden=32, layers=2, freq=1, adapter="linear", encoder=None) -> ImageX2LConfig:
    return ImageX2LConfig(
        encoder=ImageEncoderConfig(**(encoder or TINY_ENCODER)),
        qformer=QFormerConfig(
            num_queries=num_queries, hidden_size=hidden, num_layers=layers, num_heads=4, cross_attention_frequency=freq
        ),
        adapter=IAdapterConfig(type=adapter, hidden_dim=24),
    )


def _pictures(n: int, size: int, seed: int = 0) -> torch.Tensor:
    arrays = [np.asarray(SC.render(SC.random_scene(random.Random(seed + i), f"s{i}", image_size=size))) for i in range(n)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0


@pytest.mark.parametrize(
    "num_queries, layers, freq, adapter, size, llm_hidden",
    [
        (32, 2, 1, "linear", 96, 64),
        (8, 2, 2, "mlp", 64, 48),
        (1, 1, 1, "linear", 48, 96),
        (16, 3, 3, "mlp", 128, 40),
    ],
)
def test_positions_and_width(num_queries, layers, freq, adapter, size, llm_hidden):
    torch.manual_seed(0)
    model = ImageX2L(_config(num_queries, 32, layers, freq, adapter), llm_hidden_size=llm_hidden).eval()
    images = _pictures(3, size)
    out = model(images)
    assert out.shape == (3, num_queries, llm_hidden)
    assert model.num_positions == num_queries
    strides = 2 ** len(TINY_ENCODER["channels"])
    assert model.patch_features(images).shape == (3, (-(-size // strides)) ** 2, TINY_ENCODER["dim"])
    assert torch.isfinite(out).all()
    # every position depends on the picture (cross-attention works), and different pictures differ
    other = model(_pictures(3, size, seed=100))
    assert (out - other).abs().amax(dim=-1).min() > 0


def test_bad_inputs_and_configs():
    model = ImageX2L(_config(), llm_hidden_size=16)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match="llm_hidden_size"):
        ImageX2L(_config())
    with pytest.raises(ValueError, match="needs name_or_path"):
        ImageEncoderConfig(type="hf")
    with pytest.raises(ValueError, match="unknown key"):
        ImageX2LConfig.from_dict({"qformer": {"queries": 4}})
    with pytest.raises(ValueError, match="cross_attention_frequency"):
        QFormerConfig(num_layers=2, cross_attention_frequency=3)


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(1)
    model = ImageX2L(_config(adapter="mlp"), llm_hidden_size=40).eval()
    images = _pictures(2, 64)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "image_x2l.json").read_text())["llm_hidden_size"] == 40
    again = ImageX2L.from_pretrained(tmp_path / "m").eval()
    assert torch.equal(model(images), again(images))
    frozen = ImageX2L.from_pretrained(tmp_path / "m", freeze_encoder=True).train()
    assert not any(p.requires_grad for p in frozen.encoder.parameters()) and not frozen.encoder.training
    assert all(p.requires_grad for p in frozen.qformer.parameters())
    (tmp_path / "m" / "image_x2l.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="image_x2l.safetensors: cannot read the weights"):
        ImageX2L.from_pretrained(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="image_x2l.json"):
        ImageX2L.from_pretrained(tmp_path / "nothing")


def test_transformers_vision_encoder_from_a_local_folder(tmp_path):
    """type hf: any transformers vision model folder (here a small random ViT written for the test)."""
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    torch.manual_seed(2)
    vit_dir = tmp_path / "vit"
    ViTModel(
        ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(vit_dir)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(vit_dir)
    enc = dict(type="hf", name_or_path=str(vit_dir))
    model = ImageX2L(_config(num_queries=4, encoder=enc), llm_hidden_size=24).eval()
    images = _pictures(2, 64)  # resized to the processor's 32 x 32 inside
    assert model.picture_size() == (32, 32)  # the size loaders resize to (pictures of any size batch together)
    assert model.patch_features(images).shape == (2, 1 + 16, 32)  # CLS + 4 x 4 patches
    assert model(images).shape == (2, 4, 24)
    model.freeze_encoder()
    model.save_pretrained(tmp_path / "m")
    saved = load_state_file(tmp_path / "m" / "image_x2l.safetensors")
    assert not any(k.startswith("encoder.") for k in saved)  # a frozen hf encoder is referenced, not copied
    again = ImageX2L.from_pretrained(tmp_path / "m").eval()
    assert again.config.freeze_encoder and torch.equal(model(images), again(images))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageX2L(_config(encoder=dict(type="hf", name_or_path=str(tmp_path / "missing"))), llm_hidden_size=8)


# ---------------------------------------------------------------- the image stage


@pytest.fixture(scope="module")
def tiny_llm():
    from asr.models.llm import LlmConfig, load_llm

    return load_llm(LlmConfig(name_or_path="tiny-glm"))


def _stage_config(contrastive=0.0, **loss):
    from asr.models.caption import ImageStageConfig

    return ImageStageConfig.from_sections(
        {
            "image_x2l": {"encoder": TINY_ENCODER, "qformer": {"num_queries": 4, "hidden_size": 32, "num_layers": 1}},
            "llm": {"name_or_path": "tiny-glm"},
            "loss": {"contrastive_weight": contrastive, **loss},
        }
    )


def test_caption_steps_lower_the_loss_on_a_fixed_batch(tiny_llm):
    from asr.models.caption import ImageCaptionModel

    torch.manual_seed(0)
    model = ImageCaptionModel(_stage_config(), tiny_llm)
    assert not any(p.requires_grad for p in model.llm.parameters())
    scenes = [SC.random_scene(random.Random(i), f"s{i}", image_size=48) for i in range(4)]
    images = _pictures(4, 48)
    targets = [model.prompt.target_ids(SC.caption(s)) for s in scenes]
    lengths = torch.tensor([len(t) for t in targets])
    ids = torch.full((4, int(lengths.max())), -100)
    for b, t in enumerate(targets):
        ids[b, : len(t)] = torch.tensor(t)
    frozen = {n: p.detach().clone() for n, p in model.llm.named_parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=2e-2)
    model.train()
    losses = []
    for step in range(5):
        out = model(images, ids, lengths)
        assert set(out) >= {"loss", "lm_loss", "acc"}
        opt.zero_grad()
        out["loss"].backward()
        if step == 0:  # the caption loss reaches every part of the interface, the encoder included
            for part in (model.x2l.encoder, model.x2l.qformer, model.x2l.adapter):
                assert sum(float(p.grad.abs().sum()) for p in part.parameters() if p.grad is not None) > 0
        opt.step()
        losses.append(float(out["lm_loss"]))
    # a random tiny LLM has near-uniform outputs (loss ~ ln 400 = 6.0): the interface moves them a little
    assert losses[-1] < losses[0] - 0.01, losses
    assert all(torch.equal(p, frozen[n]) for n, p in model.llm.named_parameters())
    # the cached prompt prefix gives the loss of the full prompt
    model.eval()
    with torch.no_grad():
        cached = model(images, ids, lengths)["lm_loss"]
        model.cache_prefix = False
        full = model(images, ids, lengths)["lm_loss"]
    assert torch.allclose(cached, full, atol=1e-4), (cached, full)
    # with the contrastive term: loss = caption loss + weight x InfoNCE over the batch
    itc_model = ImageCaptionModel(_stage_config(contrastive=0.5), tiny_llm)
    out = itc_model(images, ids, lengths)
    assert 0 < float(out["itc_loss"]) and torch.isclose(out["loss"], out["lm_loss"] + 0.5 * out["itc_loss"])
    captions = model.generate(images[:2], max_new_tokens=5)
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)


def test_contrastive_loss_leaves_out_other_captions_of_the_same_picture(tiny_llm):
    """Two captions of one picture in a batch: the other caption is no negative (else the best a model
    could score on a batch of caption pairs is half right)."""
    from asr.models.caption import ImageCaptionModel

    torch.manual_seed(0)
    model = ImageCaptionModel(_stage_config(contrastive=1.0), tiny_llm).eval()
    scenes = [SC.random_scene(random.Random(i), f"s{i}", image_size=48) for i in range(3)]
    pics = _pictures(3, 48)
    images = torch.stack([pics[0], pics[0], pics[1], pics[2]])  # captions 0 and 1 share picture 0
    targets = [
        model.prompt.target_ids(SC.caption(scenes[0], 0)),
        model.prompt.target_ids(SC.caption(scenes[0], 1)),
        model.prompt.target_ids(SC.caption(scenes[1])),
        model.prompt.target_ids(SC.caption(scenes[2])),
    ]
    with torch.no_grad():
        emb = model.image_embeddings(images)
        plain, _ = model.contrastive_loss(emb, targets)
        distinct, _ = model.contrastive_loss(emb, targets, torch.tensor([0, 1, 2, 3]))
        shared, acc = model.contrastive_loss(emb, targets, torch.tensor([5, 5, 7, 9]))
        # by hand: the (0, 1) and (1, 0) pairs removed from both directions' softmax
        img = torch.nn.functional.normalize(model.itc_proj(emb.float()), dim=-1)
        text = torch.stack([model.llm.get_input_embeddings()(torch.tensor(t[:-1])).float().mean(0) for t in targets])
        txt = torch.nn.functional.normalize(model.itc_text_proj(text), dim=-1)
        logits = torch.einsum("bqd,cd->bcq", img, txt).amax(-1) * model.itc_log_scale.exp()
        logits[0, 1] = logits[1, 0] = float("-inf")
        labels = torch.arange(4)
        expected = 0.5 * (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels))
    assert torch.isclose(distinct, plain)  # all pictures distinct: the plain InfoNCE
    assert torch.isclose(shared, expected, atol=1e-5) and shared < plain
    assert float(acc) == float((logits.argmax(1) == labels).float().mean())
    # another picture of the same scene, same caption text: no negative either, as if the picture were shared
    same_text = [targets[0], list(targets[0]), targets[2], targets[3]]
    with torch.no_grad():
        by_text, _ = model.contrastive_loss(emb, same_text, torch.tensor([0, 1, 2, 3]))
        logits2 = torch.einsum("bqd,cd->bcq", img, txt[[0, 0, 2, 3]]).amax(-1) * model.itc_log_scale.exp()
        logits2[0, 1] = logits2[1, 0] = float("-inf")
        expected2 = 0.5 * (
            torch.nn.functional.cross_entropy(logits2, labels) + torch.nn.functional.cross_entropy(logits2.T, labels)
        )
    assert torch.isclose(by_text, expected2, atol=1e-5)


def test_transformer_text_encoder_learns_word_order():
    """Two captions with the same tokens in another order: the mean of their embeddings is one vector
    (a bag of words); CaptionTextEncoder starts there (its word-order part is zero-initialised) and
    learns to tell them apart."""
    from asr.models.caption import CaptionTextEncoder

    torch.manual_seed(0)
    words = torch.randn(6, 16) * 0.05  # LLM input embeddings are small
    first, second = words, words[[0, 3, 2, 1, 4, 5]]  # two words exchanged
    encoder = CaptionTextEncoder(16, dim=8, num_layers=1)
    with torch.no_grad():
        start = encoder([first, second])
    assert torch.allclose(start[0], start[1], atol=1e-6)
    goal = torch.tensor([0, 1])
    classes = torch.nn.Linear(8, 2)
    opt = torch.optim.Adam([*encoder.parameters(), *classes.parameters()], lr=3e-3)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(classes(encoder([first, second])), goal)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.1  # a bag of words stays at log 2 = 0.69
    with pytest.raises(ValueError, match="longer than"):
        encoder([torch.zeros(200, 16)])


def test_itg_decoder_learns_which_colour_goes_with_which_shape():
    """Two pictures with the same colours and shapes bound the other way round: a caption decoder that
    reads the image positions learns both captions (a bag of the positions could not: its caption
    likelihoods would tie), and scores each picture's caption above the swapped one."""
    from asr.models.caption import CaptionDecoder

    torch.manual_seed(0)
    red, blue, star, cross = torch.randn(4, 16)
    # one image position per object: colour + shape in one vector; the positions' sum is the same in both
    pictures = torch.stack([torch.stack([red + star, blue + cross]), torch.stack([blue + star, red + cross])])
    RED, BLUE, STAR, CROSS, EOS = 11, 12, 20, 21, 2
    captions = [[RED, STAR, BLUE, CROSS, EOS], [BLUE, STAR, RED, CROSS, EOS]]
    decoder = CaptionDecoder(16, sorted({t for c in captions for t in c}), dim=32, num_layers=1)
    assert decoder.classes(torch.tensor([RED, 999, EOS])).tolist() == [1, decoder.unk, 0]  # 999: not a caption token
    opt = torch.optim.Adam(decoder.parameters(), lr=3e-3)
    for _ in range(150):
        loss, acc = decoder(pictures, captions)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.05 and float(acc) == 1.0  # an image-blind decoder stays at log 2 / 5 tokens = 0.14
    true = decoder.log_likelihood(pictures, captions)
    swapped = decoder.log_likelihood(pictures, captions[::-1])
    assert bool((true > swapped + 1).all()), (true, swapped)
    with pytest.raises(ValueError, match="longer than"):
        decoder(pictures, [[EOS] * 200, [EOS]])
    with pytest.raises(ValueError, match="sorted vocabulary"):
        CaptionDecoder(16, [5, 3])


def test_swap_negatives(tmp_path, tiny_llm):
    """Captions with two words of one class exchanged join the contrastive loss as extra negatives."""
    from asr.data.captions import CaptionSet, swapped_captions
    from asr.io_utils import write_table
    from asr.models.caption import ImageCaptionModel
    from evaluation.captions import swap_retrieval

    classes = [{"red", "blue", "green"}, {"stars", "crosses"}]
    assert swapped_captions("two red stars and three blue crosses", classes) == [
        "two blue stars and three red crosses",
        "two red crosses and three blue stars",
    ]
    assert swapped_captions("two red stars and one red star", classes) == []  # nothing different to exchange
    assert swapped_captions("red blue green", classes[:1]) == ["blue red green", "green blue red", "red green blue"]

    scp, text = {}, {}
    for i, caption in enumerate(["two red stars and three blue crosses", "one green star", "two blue stars"]):
        scene = SC.random_scene(random.Random(i), f"s{i}", image_size=48)
        SC.save_png(scene, tmp_path / f"s{i}.png")
        scp[f"s{i}"], text[f"s{i}"] = str(tmp_path / f"s{i}.png"), caption
    write_table(tmp_path / "images.scp", scp)
    write_table(tmp_path / "text", text)
    torch.manual_seed(0)
    model = ImageCaptionModel(
        _stage_config(contrastive=1.0, caption_weight=0.0, text_encoder="transformer", swap_negatives=1), tiny_llm
    ).eval()
    with pytest.raises(ValueError, match="word_classes"):
        CaptionSet(tmp_path, model.prompt, swap_negatives=1)
    write_table(tmp_path / "word_classes", {"colour": "red blue green", "shape": "stars crosses"})
    data = CaptionSet(tmp_path, model.prompt, swap_negatives=1)
    batch = data.collate([0, 1, 2])
    assert batch["negative_ids"].shape[0] == 1  # only the first caption has something to exchange
    assert batch["negative_ids"][0, : int(batch["negative_lengths"][0])].tolist() == model.prompt.target_ids(
        "two blue stars and three red crosses"
    )
    with torch.no_grad():
        with_neg = model(
            batch["images"],
            batch["target_ids"],
            batch["target_lengths"],
            batch["picture_ids"],
            batch["negative_ids"],
            batch["negative_lengths"],
        )["loss"]
        without = model(batch["images"], batch["target_ids"], batch["target_lengths"], batch["picture_ids"])["loss"]
        # a "negative" with the words of a batch caption is no negative: dropped
        dup = model.prompt.target_ids("two blue stars")
        as_dup = model.contrastive_loss(
            model.image_embeddings(batch["images"]), [model.prompt.target_ids(t) for t in data.texts], None, [dup]
        )[0]
    assert float(with_neg) > float(without)  # one more column in the picture -> caption softmax
    assert torch.isclose(as_dup, without)
    # the caption model's binding check: log P(caption | picture) summed over the caption's tokens
    with torch.no_grad():
        emb = model.image_embeddings(batch["images"][:2])
        ids = [model.prompt.target_ids(t) for t in data.texts[:2]]
        ll = model.caption_log_likelihood(emb, ids)
        for b in range(2):
            assert torch.isclose(ll[b], -model.caption_loss(emb[b : b + 1], ids[b : b + 1])[0] * len(ids[b]), rtol=1e-4)
    lm = swap_retrieval(model, data, scorer="lm")
    assert lm["lm_swap_pairs"] == 1 and lm["lm_swap_wins"] in (0.0, 0.5, 1.0)
    assert swap_retrieval(model, data)["itc_swap_pairs"] == 1


def test_text_encoder_config_errors():
    with pytest.raises(ValueError, match="text_encoder"):
        _stage_config(contrastive=1.0, text_encoder="lstm")
    with pytest.raises(ValueError, match="text_layers"):
        _stage_config(contrastive=1.0, text_encoder="transformer", text_layers=0)
    with pytest.raises(ValueError, match="unknown key.*in loss"):
        _stage_config(contrastive=1.0, text_encoders="mean")
    with pytest.raises(ValueError, match="swap_negatives"):
        _stage_config(contrastive=1.0, swap_negatives=-1)
    with pytest.raises(ValueError, match="itg_layers"):
        _stage_config(itg_weight=1.0, itg_layers=0)
    with pytest.raises(ValueError, match="not all 0"):
        _stage_config(caption_weight=0.0, itg_weight=0.0)
    assert _stage_config(caption_weight=0.0, itg_weight=1.0).itg_weight == 1.0  # ITG alone is a valid run


def _one_word_apart(a: str, b: str) -> bool:
    wa, wb = a.split(), b.split()
    return len(wa) == len(wb) and sum(x != y for x, y in zip(wa, wb)) == 1


def test_hard_negative_batches_group_one_word_neighbours():
    from asr.data.captions import FixedBatchSampler, HardNegativeBatchSampler, OneWordNeighbours

    rng = random.Random(0)
    colours, shapes, places = ["red", "blue", "green"], ["stars", "circles", "crosses"], ["on the left", "at the top"]
    texts, image_of = [], []
    for pic in range(120):  # 18 distinct captions over 120 pictures (duplicated scenes), 2 captions of some
        t = f"{rng.choice(['two', 'three'])} {rng.choice(colours)} {rng.choice(shapes)} {rng.choice(places)}"
        for _ in range(1 + pic % 2):
            texts.append(t if _ == 0 else f"{t.split(' ', 1)[1]} and more")
            image_of.append(pic)
    free = bytearray(b"\x01") * len(texts)
    nb = OneWordNeighbours(texts, image_of)
    for i in range(0, len(texts), 7):
        j = nb.pick(i, random.Random(i), {texts[i]}, {image_of[i]}, free)
        assert j is not None and _one_word_apart(texts[i], texts[j]) and image_of[j] != image_of[i]
    assert nb.pick(0, rng, {texts[0]}, {image_of[0]}, bytearray(len(texts))) is None  # nothing free

    sampler = HardNegativeBatchSampler(texts, image_of, batch_size=8, share=1.0, group_size=4, seed=3)
    order = sampler.epoch_order()
    flat = [i for b in order for i in b]
    assert sorted(flat) == list(range(len(texts)))  # every caption once per epoch
    assert all(1 <= len(b) <= 8 for b in order) and len(sampler) == len(order)
    # most captions sit in a batch beside a caption of another picture one word away
    grouped = sum(any(_one_word_apart(texts[i], texts[j]) and image_of[i] != image_of[j] for j in b) for b in order for i in b)
    assert grouped > 0.6 * len(texts)
    assert sampler.epoch_order() == order  # deterministic within an epoch
    sampler.set_epoch(1)
    assert sampler.epoch_order() != order
    # no hard negatives: random batches like FixedBatchSampler's, which rarely put neighbours together
    plain = FixedBatchSampler(len(texts), 8, seed=3).epoch_order()
    grouped_plain = sum(
        any(_one_word_apart(texts[i], texts[j]) and image_of[i] != image_of[j] for j in b) for b in plain for i in b
    )
    assert grouped_plain < grouped


def test_lora_or_unfrozen_llm_is_refused(tiny_llm):
    from asr.models.caption import ImageCaptionModel

    cfg = _stage_config()
    cfg.llm.lora.enabled = True
    with pytest.raises(ValueError, match="frozen LLM"):
        ImageCaptionModel(cfg, tiny_llm)


def test_train_entry_point_writes_a_frozen_final(tmp_path, tiny_llm, capsys):
    """python -m asr.training.train_image on a captions dir: final/ loads with a frozen encoder."""
    from asr.data.captions import swapped_captions
    from asr.data.datadir import read_table
    from asr.io_utils import write_table
    from asr.models.caption import ImageCaptionModel, ImageStageConfig
    from asr.models.loading import load_model_dir
    from asr.training.train_image import init_interface, load_image_config, main

    for name, offset in (("captions", 0), ("captions_dev", 50)):
        scp, text = {}, {}
        for i in range(6 if name == "captions" else 2):
            scene = SC.random_scene(random.Random(offset + i), f"s{offset + i}", image_size=48)
            png = tmp_path / "img" / f"{scene.scene_id}.png"
            SC.save_png(scene, png)
            scp[f"{scene.scene_id}-c0"], text[f"{scene.scene_id}-c0"] = str(png), SC.caption(scene)
        write_table(tmp_path / name / "images.scp", scp)
        write_table(tmp_path / name / "text", text)
        write_table(tmp_path / name / "word_classes", {"colour": " ".join(SC.COLOURS), "shape": " ".join(SC.SHAPES)})
    dev_swaps = [
        swapped_captions(t, [set(SC.COLOURS), set(SC.SHAPES)]) for t in read_table(tmp_path / "captions_dev" / "text").values()
    ]
    cfg = tmp_path / "image.yaml"
    cfg.write_text(
        json.dumps(
            {
                "image_x2l": {"encoder": TINY_ENCODER, "qformer": {"num_queries": 4, "hidden_size": 32, "num_layers": 1}},
                "llm": {"name_or_path": "tiny-glm"},
                "train": {
                    "max_epochs": 1,
                    "max_batch_size": 3,
                    "warmup_steps": 1,
                    "log_interval": 1,
                    "lr": 0.003,
                    "device": "cpu",
                },
                "eval": {"num_captions": 2, "max_new_tokens": 4},
            }
        )
    )
    exp = tmp_path / "exp"
    assert (
        main(
            [
                "--config",
                str(cfg),
                "--captions",
                str(tmp_path / "captions"),
                "--valid-captions",
                str(tmp_path / "captions_dev"),
                "--exp-dir",
                str(exp),
            ]
        )
        == 0
    )
    final = exp / "final"
    assert json.loads((final / "image_x2l.json").read_text())["freeze_encoder"] is True
    scores = json.loads((final / "eval.json").read_text())
    assert scores["pictures"] == 2 and 0 <= scores["exact_match"] <= 1
    assert ("lm_swap_wins" in scores) == any(dev_swaps)  # the caption model's binding check
    assert scores["lm_loss"] > 0 and scores["lm_loss_other_picture"] > 0
    assert len((exp / "train_log.csv").read_text().splitlines()) == 1 + 2  # header + 2 steps of 3 captions
    model = ImageCaptionModel.from_pretrained(final)
    assert not any(p.requires_grad for p in model.x2l.encoder.parameters())
    # BLIP-2-like two runs: contrastive only (no LLM forward), then the caption run starting from it
    cfg2 = json.loads(cfg.read_text())
    cfg2["loss"] = {
        "caption_weight": 0,
        "contrastive_weight": 1,
        "text_encoder": "transformer",
        "text_layers": 1,
        "swap_negatives": 2,
        "itg_weight": 0.5,
        "itg_layers": 1,
    }
    cfg2["batching"] = {"hard_negative_share": 1.0, "group_size": 2}  # groups of one-word neighbours
    (tmp_path / "itc.yaml").write_text(json.dumps(cfg2))
    assert (
        main(
            [
                "--config",
                str(tmp_path / "itc.yaml"),
                "--captions",
                str(tmp_path / "captions"),
                "--valid-captions",
                str(tmp_path / "captions_dev"),
                "--exp-dir",
                str(tmp_path / "itc"),
            ]
        )
        == 0
    )
    itc = json.loads((tmp_path / "itc" / "final" / "eval.json").read_text())
    swap_keys = {"itc_swap_wins", "itc_swap_pairs", "itg_swap_wins", "itg_swap_pairs"} if any(dev_swaps) else set()
    assert (
        set(itc)
        == {"pictures", "itc_top1", "itc_chance", "itc_top1_hard", "itc_hard_captions", "itg_loss", "itg_loss_other_picture"}
        | swap_keys
    )
    assert itc["itc_chance"] == 0.5 and 0 <= itc["itc_top1_hard"] <= 1 and itc["itg_loss"] > 0
    assert "itg_loss" in (tmp_path / "itc" / "train_log.csv").read_text().splitlines()[0]
    # the contrastive head is kept beside the interface; --init starts a run with the same head from it
    head = load_state_file(tmp_path / "itc" / "final" / "itc_head.safetensors")
    assert any(k.startswith("itc_text_encoder.") for k in head)
    itg = load_state_file(tmp_path / "itc" / "final" / "itg_decoder.safetensors")
    again = ImageCaptionModel(
        ImageStageConfig.from_sections(load_image_config(tmp_path / "itc.yaml")),
        tiny_llm,
        caption_vocab=itg["itg_decoder.vocab"].tolist(),
    )
    init_interface(again, tmp_path / "itc" / "final")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in head.items())
    # so is the ITG decoder, with the vocabulary of the training captions it predicts among
    vocab = sorted({t for text in read_table(tmp_path / "captions" / "text").values() for t in again.prompt.target_ids(text)})
    assert itg["itg_decoder.vocab"].tolist() == vocab
    last = sorted((tmp_path / "itc" / "checkpoints").glob("step_*.pt"))[-1]  # a checkpoint carries it too
    assert torch.load(last, weights_only=False)["model"]["itg_decoder.vocab"].tolist() == vocab
    assert all(torch.equal(again.state_dict()[k], v) for k, v in itg.items())
    with pytest.raises(ValueError, match="caption_vocab"):
        ImageCaptionModel(ImageStageConfig.from_sections(load_image_config(tmp_path / "itc.yaml")), tiny_llm)
    # the saved dir gives the same model back, loss settings and heads included (kind image_caption)
    loaded = load_model_dir(tmp_path / "itc" / "final")
    assert isinstance(loaded, ImageCaptionModel)
    assert dataclasses.asdict(loaded.config) == {
        **dataclasses.asdict(again.config),
        "image_x2l": dataclasses.asdict(loaded.x2l.config),  # as finalized: encoder frozen for later stages
    }
    mine = loaded.state_dict()
    assert all(torch.equal(mine[k], v) for k, v in {**head, **itg}.items())
    # the recipe's binding check reads that dir through the one loader, or a step checkpoint with its config
    import itc_binding

    for source in (
        ["--model-dir", str(tmp_path / "itc" / "final")],
        ["--checkpoint", str(last), "--config", str(tmp_path / "itc.yaml")],
    ):
        assert itc_binding.main([*source, "--captions", str(tmp_path / "captions_dev"), "--scorer", "itg"]) == 0
        scores = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert scores["scorer"] == "itg"
        assert all(0 <= v["true_wins"] <= 1 for k, v in scores.items() if k.startswith("binding_"))
    assert (
        itc_binding.main(
            ["--model-dir", str(tmp_path / "itc" / "final"), "--captions", str(tmp_path / "captions_dev"), "--scorer", "lm"]
        )
        == 2
    )
    assert (
        main(
            [
                "--config",
                str(cfg),
                "--captions",
                str(tmp_path / "captions"),
                "--exp-dir",
                str(tmp_path / "cap"),
                "--init",
                str(tmp_path / "itc" / "final"),
                "--max-steps",
                "1",
            ]
        )
        == 0
    )
    cfg2["image_x2l"]["qformer"]["num_queries"] = 5
    (tmp_path / "other.yaml").write_text(json.dumps(cfg2))
    assert (
        main(
            [
                "--config",
                str(tmp_path / "other.yaml"),
                "--captions",
                str(tmp_path / "captions"),
                "--exp-dir",
                str(tmp_path / "e3"),
                "--init",
                str(tmp_path / "itc" / "final"),
            ]
        )
        == 2
    )
    # a config error names the file
    bad = tmp_path / "bad.yaml"
    bad.write_text("image_x2l: {qformer: {queries: 3}}\n")
    assert main(["--config", str(bad), "--captions", str(tmp_path / "captions"), "--exp-dir", str(tmp_path / "e2")]) == 2
    bad.write_text("batching: {hard_negative_share: 1.5}\n")
    assert main(["--config", str(bad), "--captions", str(tmp_path / "captions"), "--exp-dir", str(tmp_path / "e2")]) == 2
