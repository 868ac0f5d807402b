"""Tests of recipes/mini_vis stage 0: scenes, sentences, rendering and the image-grounded corpus.

The corpus test builds a tiny corpus (espeak-ng voices only, a few utterances per set) once per
module in a temp dir, the way run.sh calls ``local/make_corpus.py``, then checks the data dirs,
the pictures, the SNR of the noisy copies, the masked spans and that a second run is a no-op.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mini_vis"
sys.path.insert(0, str(RECIPE / "local"))

import scenes as SC  # noqa: E402

sf = pytest.importorskip("soundfile")

from asr.data.datadir import read_table, validate_data_dir  # noqa: E402

# ---------------------------------------------------------------- scenes and sentences

CATEGORY_WORDS = {
    "count": set(SC.COUNT_WORDS.values()),
    "colour": set(SC.COLOURS),
    "shape": set(SC.SHAPES) | set(SC.PLURAL.values()),
    "position": {"left", "right", "top", "bottom", "center"},
    "relation": {"left", "right", "above", "below"},
}


def test_sentences_and_captions_match_their_scenes():
    seen_templates = set()
    for seed in range(300):
        rnd = random.Random(seed)
        scene = SC.random_scene(rnd, f"s{seed}", image_size=96)
        for name in SC.templates_for(scene):
            s = SC.sentence(scene, rnd, name)
            seen_templates.add(name)
            assert SC.verify(s.text, scene) == [], (s.text, scene.groups)
            for i, cat in s.content.items():
                assert s.words[i] in CATEGORY_WORDS[cat], (s.text, i, cat)
        for style in (0, 1):
            assert SC.verify(SC.caption(scene, style), scene) == []
    assert seen_templates == set(SC.TEMPLATES)


def test_verifier_rejects_wrong_descriptions():
    rejected_other = 0
    for seed in range(200):
        rnd = random.Random(seed)
        scene = SC.random_scene(rnd, "a")
        other = SC.random_scene(random.Random(10_000 + seed), "b")
        s = SC.sentence(scene, rnd)
        if SC.caption(scene) != SC.caption(other):
            rejected_other += bool(SC.verify(s.text, other))
        # change one content word to another word of its category: the sentence must no longer fit
        i, cat = sorted(s.content.items())[seed % len(s.content)]
        words = list(s.words)
        if cat == "colour":
            words[i] = next(c for c in SC.COLOURS if c != words[i])
        elif cat == "shape":
            plural = words[i] in SC.SINGULAR
            new = next(sh for sh in SC.SHAPES if sh != SC.SINGULAR.get(words[i], words[i]))
            words[i] = SC.PLURAL[new] if plural else new
        elif cat == "count":
            n = SC.WORD_COUNTS[words[i]]
            if n == 1:
                continue  # another count would break the plural agreement instead; covered below
            words[i] = SC.COUNT_WORDS[2 if n != 2 else 3]
        elif cat == "position":  # the whole phrase ("on the left") becomes another position's phrase
            now = next(p for p, (phrase, _) in SC.POSITIONS.items() if phrase[-1] == words[i])
            other = next(p for p in SC.POSITIONS if p != now)
            words[i - 2 : i + 1] = SC.POSITIONS[other][0]
        elif cat == "relation":
            words[i] = {"left": "right", "right": "left", "above": "below", "below": "above"}[words[i]]
        assert SC.verify(" ".join(words), scene), (s.text, " ".join(words))
    assert rejected_other >= 195
    scene = SC.random_scene(random.Random(3), "x")
    g = scene.groups[0]
    wrong_number = f"{SC.COUNT_WORDS[g.count]} {g.colour} {g.shape if g.count > 1 else SC.PLURAL[g.shape]}"
    assert any("number" in e for e in SC.verify(wrong_number, scene, complete=False))


@pytest.mark.parametrize("size", [48, 64, 96, 128])
def test_rendering_shows_the_scene(size):
    for seed in range(60):
        scene = SC.random_scene(random.Random(seed), f"s{seed}", image_size=size)
        img = SC.render(scene)
        assert img.size == (size, size)
        assert SC.check_render(scene, img) == []
    # a scene edited after rendering no longer matches the picture
    scene = SC.random_scene(random.Random(1), "s", image_size=96)
    img = SC.render(scene)
    g = scene.groups[0]
    scene.groups[0] = SC.Group(g.count % 4 + 1, g.colour, g.shape, g.position)
    assert SC.check_render(scene, img)


def test_scene_json_round_trip():
    scene = SC.random_scene(random.Random(5), "s", image_size=64)
    again = SC.Scene.from_json(json.loads(json.dumps(scene.to_json())))
    assert again == scene and np.array_equal(np.asarray(SC.render(again)), np.asarray(SC.render(scene)))


# ---------------------------------------------------------------- the corpus

TINY = """
seed: 11
sample_rate: 16000
image_size: 64
voices: [espeak:en-us+m3, espeak:en+f2]
train: {num_scenes: 4}
dev: {num_scenes: 2}
test: {num_scenes: 3}
train_augment: {noisy_fraction: 0.5, masked_fraction: 0.5, snr_db: [0, 15]}
noise: {types: [white, babble], babble_talkers: [2, 2]}
masking: {num_words: [1, 2], margin_ms: 20, burst_db: 0}
captions: {num_images: 3, dev_images: 2, captions_per_image: 2}
"""
SETS = ("train", "dev", "test_clean", "test_10db", "test_5db", "test_0db", "test_masked")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, recipe_script):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    make_corpus = recipe_script("mini_vis", "make_corpus")

    root = tmp_path_factory.mktemp("mini_vis")
    (root / "tiny.yaml").write_text(TINY)
    assert make_corpus.main(["--config", str(root / "tiny.yaml"), "--data", str(root / "data"), "--nj", "2"]) == 0
    return root


def _scenes(data: Path) -> dict[str, SC.Scene]:
    lines = (data / "local" / "corpus" / "scenes.jsonl").read_text().splitlines()
    return {s.scene_id: s for s in (SC.Scene.from_json(json.loads(x)) for x in lines)}


def test_data_dirs_validate_and_describe_their_pictures(corpus):
    from PIL import Image

    data = corpus / "data"
    scenes = _scenes(data)
    for name in SETS:
        n = validate_data_dir(data / name)
        assert n >= 2, name
        text, images = read_table(data / name / "text"), read_table(data / name / "utt2image")
        assert set(images) == set(text) == set(read_table(data / name / "utt2dur"))
        spans = read_table(data / name / "word_spans")
        for utt, words in text.items():
            scene = scenes[Path(images[utt]).stem]
            assert SC.verify(words, scene) == [], (utt, words)
            assert SC.check_render(scene, Image.open(images[utt])) == []
            assert len(spans[utt].split()) == len(words.split())
        if name.startswith("test_"):
            mis = read_table(data / name / "utt2image_mismatch")
            assert set(mis) == set(text)
            for utt, path in mis.items():
                assert path != images[utt] and SC.verify(text[utt], scenes[Path(path).stem])
    assert len(read_table(data / "test_masked" / "masked_words")) == len(read_table(data / "test_masked" / "text"))
    train_masked = read_table(data / "train" / "masked_words")
    assert train_masked and all(u.endswith("-mask") for u in train_masked)
    for cdir in ("captions", "captions_dev"):
        scp, cap = read_table(data / cdir / "images.scp"), read_table(data / cdir / "text")
        assert scp.keys() == cap.keys()
        for cid, caption in cap.items():
            assert SC.verify(caption, scenes[Path(scp[cid]).stem]) == []
    assert len(read_table(data / "captions" / "text")) == 2 * (4 + 3)  # train scenes + caption-only scenes


def test_swapped_captions_describe_another_scene(corpus):
    """The image stage's swap negatives (two words of one class in data/captions/word_classes exchanged)
    are well-formed descriptions, each false for the caption's picture."""
    from asr.data.captions import swapped_captions

    data = corpus / "data"
    scenes = _scenes(data)
    classes = [set(v.split()) for v in read_table(data / "captions" / "word_classes").values()]
    swaps = 0
    for cdir in ("captions", "captions_dev"):
        scp, cap = read_table(data / cdir / "images.scp"), read_table(data / cdir / "text")
        for cid, caption in cap.items():
            for other in swapped_captions(caption, classes):
                assert SC.parse(other)[1] == [], (caption, other)
                assert SC.verify(other, scenes[Path(scp[cid]).stem]) != [], (caption, other)
                swaps += 1
    assert swaps > 0


def _clean_of(data: Path) -> dict[str, str]:
    return read_table(data / "test_clean" / "wav.scp")


@pytest.mark.parametrize("name, snr", [("test_10db", 10), ("test_5db", 5), ("test_0db", 0)])
def test_noisy_copies_have_the_set_snr(corpus, name, snr):
    data = corpus / "data"
    clean = _clean_of(data)
    for utt, path in read_table(data / name / "wav.scp").items():
        c, _ = sf.read(clean[utt.rsplit("-", 1)[0]])
        x, _ = sf.read(path)
        assert len(x) == len(c)
        gain = np.dot(x, c) / np.dot(c, c)  # the mix is rescaled as a whole: project out the speech
        noise = x - gain * c
        measured = 10 * np.log10(np.sum((gain * c) ** 2) / np.sum(noise**2))
        assert abs(measured - snr) < 0.5, (utt, measured)


def test_masked_spans_cover_the_recorded_words(corpus):
    data = corpus / "data"
    clean = _clean_of(data)
    text = read_table(data / "test_masked" / "text")
    spans = read_table(data / "test_masked" / "word_spans")
    content_words = set().union(*CATEGORY_WORDS.values())
    for utt, idx in read_table(data / "test_masked" / "masked_words").items():
        c, rate = sf.read(clean[utt[: -len("-mask")]])
        x, _ = sf.read(read_table(data / "test_masked" / "wav.scp")[utt])
        words, word_spans = text[utt].split(), [tuple(map(float, s.split(":"))) for s in spans[utt].split()]
        masked = [int(i) for i in idx.split()]
        assert 1 <= len(masked) <= 2
        covered = np.zeros(len(c), bool)
        for i in masked:
            assert words[i] in content_words and words[i] not in ("a", "an")
            a, b = word_spans[i]
            s, e = int(a * rate), int(b * rate)
            seg_c, seg_x = c[s:e], x[s:e]
            # the word is gone: the burst is as loud as speech and unrelated to the word's audio
            assert abs(np.corrcoef(seg_c, seg_x)[0, 1]) < 0.2
            assert np.sqrt(np.mean(seg_x**2)) > 0.3 * np.sqrt(np.mean(seg_c**2))
            assert np.mean(np.abs(seg_x) > 1e-3) > 0.95  # noise over the whole span, no hole
            covered[max(0, s - int(0.03 * rate)) : e + int(0.03 * rate)] = True  # + the margin
        # everything else is the clean utterance
        assert np.max(np.abs(x[~covered] - c[~covered])) < 2e-4


def test_second_run_is_a_no_op(corpus, capsys, recipe_script):
    make_corpus = recipe_script("mini_vis", "make_corpus")

    data = corpus / "data"
    wavs = sorted((data / "wav").rglob("*.wav"))
    before = {p: p.stat().st_mtime_ns for p in wavs}
    pngs = {p: p.stat().st_mtime_ns for p in (data / "images").rglob("*.png")}
    assert make_corpus.main(["--config", str(corpus / "tiny.yaml"), "--data", str(data), "--nj", "1"]) == 0
    summary = json.loads((data / "local" / "corpus" / "summary.json").read_text())
    assert all(s["new"] == 0 and s["failed"] == 0 for s in summary["sets"].values())
    assert summary["pictures_made"] == 0
    assert {p: p.stat().st_mtime_ns for p in wavs} == before
    assert {p: p.stat().st_mtime_ns for p in (data / "images").rglob("*.png")} == pngs


def test_config_errors_name_the_file(tmp_path, recipe_script):
    make_corpus = recipe_script("mini_vis", "make_corpus")

    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY + "colours: [red]\n")
    with pytest.raises(SystemExit, match="bad.yaml: unknown keys"):
        make_corpus.load_config(bad)
    bad.write_text(TINY.replace("voices: [espeak:en-us+m3, espeak:en+f2]", "voices: [festival:kal_diphone]"))
    with pytest.raises(SystemExit, match="not supported for word-by-word"):
        make_corpus.parse_voices(make_corpus.load_config(bad)["voices"], "voices")
