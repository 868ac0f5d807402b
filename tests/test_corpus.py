"""Tests of stage 0 of recipes/mini: sentence filtering, splits, voices and the corpus maker.

The end-to-end test builds a tiny corpus (30 Harvard sentences, one voice per installed engine)
twice in a temp dir, exactly as ``run.sh`` calls ``local/make_corpus.py``, and checks the data
dirs, the audio, the splits and that the second run is a no-op.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "mini"
sys.path.insert(0, str(RECIPE / "local"))

import sentences as S  # noqa: E402
import voices as V  # noqa: E402

sf = pytest.importorskip("soundfile")


# ---------------------------------------------------------------- sentences


@pytest.fixture(scope="module")
def sfilter():
    return S.SentenceFilter(S.load_dictionary())


def test_normalize_text():
    assert S.normalize_text("It's a well-known fact -- isn't it?") == "it's a well known fact isn't it"
    assert S.normalize_text("'Tis the dogs' \u201cbone\u201d, O Lord!") == "tis the dogs bone o lord"
    assert S.normalize_text("Front_Center") == "front center"


@pytest.mark.parametrize(
    "raw, reason",
    [
        ("The price rose by 25 percent last year.", "digit"),
        ("He paid $5 for the old red hat.", "digit"),
        ("The NASA rocket flew over the sea.", "all-caps"),
        ("Mr. Smith went to the big city.", "abbreviation"),
        ("Go away.", "length"),
        ("The zorblax quiffled the gnarptious vlemmings greatly.", "dictionary"),
        ("She wrote (in haste) a short note.", "character"),
        ("The letter x was carved on the old door.", "letter"),
        (
            "One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty more.",
            "length",
        ),
    ],
)
def test_filter_rejects(sfilter, raw, reason):
    if reason == "dictionary" and not sfilter.dictionary:
        pytest.skip("no word list installed")
    assert sfilter.reject_reason(raw) == reason


@pytest.mark.parametrize(
    "raw",
    [
        "The birch canoe slid on the smooth planks.",
        "Don't look back, something might be gaining on you.",
        "I will feed them in a good pasture",
    ],
)
def test_filter_accepts(sfilter, raw):
    assert sfilter.reject_reason(raw) is None


def test_harvard_sentences_complete():
    lines = list(S.harvard_sentences())
    assert len(lines) == 720 and len(set(lines)) == 720
    assert lines[0] == "The birch canoe slid on the smooth planks."


def test_split_is_disjoint_and_stable():
    pool = [
        S.Sentence(f"sentence number {w}", f"Sentence number {w}.", "x")
        for w in S.SINGLE_LETTER_WORDS | set("bcdefgh") | {str(i) for i in range(200)}
    ]
    a = S.split_by_sentence(pool, 10, 10, seed=3)
    b = S.split_by_sentence(list(reversed(pool)), 10, 10, seed=3)
    texts = {k: {s.text for s in v} for k, v in a.items()}
    assert not texts["test"] & texts["train"] and not texts["dev"] & texts["train"] and not texts["test"] & texts["dev"]
    assert sum(len(v) for v in texts.values()) == len(pool)
    assert texts == {k: {s.text for s in v} for k, v in b.items()}  # depends on the text, not the order


# ---------------------------------------------------------------- voices


def test_voice_names_and_identity():
    v = V.Voice.parse("espeak:en-gb-x-rp+f4")
    assert v.name == "espeak_en_gb_x_rp_f4" and re.fullmatch(r"[a-z0-9_]+", v.name)
    assert V.Voice.parse("festival:cmu_us_slt_arctic_hts").name == "festival_slt_hts"
    assert V.Voice.parse("flite:kal16").identity == V.Voice.parse("festival:kal_diphone").identity
    with pytest.raises(ValueError):
        V.Voice.parse("espeak:en-us")  # no variant
    with pytest.raises(ValueError):
        V.Voice.parse("mbrola:us1")


def test_unseen_check_refuses_same_speaker(recipe_script):
    make_corpus = recipe_script("mini", "make_corpus")

    with pytest.raises(SystemExit):
        make_corpus.check_unseen([V.Voice.parse("flite:slt")], [V.Voice.parse("festival:cmu_us_slt_arctic_hts")])
    with pytest.raises(SystemExit):
        make_corpus.check_unseen([V.Voice.parse("espeak:en+m7")], [V.Voice.parse("espeak:en-us+m7")])
    make_corpus.check_unseen([V.Voice.parse("flite:slt")], [V.Voice.parse("flite:kal16")])


@pytest.mark.skipif(not V.engine_available("espeak"), reason="espeak-ng not installed")
def test_failed_synthesis_is_reported_not_raised(tmp_path, monkeypatch, recipe_script):
    make_corpus = recipe_script("mini", "make_corpus")

    monkeypatch.setattr(make_corpus, "_TMP", tmp_path / "tmp")  # what a pool worker's initializer sets
    wav = tmp_path / "bad.wav"
    job = {
        "kind": "synth",
        "voice": "espeak:en-us+m3",
        "items": [{"utt": "x-000000", "text": "", "params": {"rate": 170, "pitch": 50}, "wav": str(wav)}],
    }
    (res,) = make_corpus.run_job(job)
    assert "error" in res and not wav.exists()


# ---------------------------------------------------------------- end to end

TRAIN_CANDIDATES = ["espeak:en-us+m3", "flite:awb", "festival:cmu_us_slt_arctic_hts", "piper:joe"]
TEST_CANDIDATES = ["flite:kal16", "espeak:en-us+m7"]


def _available(specs):
    return [s for s in specs if V.engine_available(s.split(":")[0])]


TINY_CONFIG = """\
seed: 5
sentences:
  sources: {{harvard: 30}}
  test_percent: 20
  dev_percent: 20
train:
  num_utts: {n_train}
  voices: {train}
dev:
  num_utts: 4
test_unseen:
  num_utts: 4
  voices: {test}
augment:
  fraction: 0.5
  babble_talkers: [2, 3]
"""


def _snapshot(data: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(data)): p.read_bytes()
        for s in ("train", "dev", "test_unseen", "test_real")
        for p in sorted((data / s).iterdir())
    }


def _wav_state(data: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in (data / "wav").rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory):
    train, test = _available(TRAIN_CANDIDATES), _available(TEST_CANDIDATES)
    if not train or not test or not V.engine_available("espeak") and not V.engine_available("flite"):
        pytest.skip("needs espeak-ng or flite (Debian) for the tiny corpus")
    tmp = tmp_path_factory.mktemp("corpus")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(TINY_CONFIG.format(n_train=6 * len(train), train=train, test=test))
    data = tmp / "data"
    cmd = [sys.executable, "local/make_corpus.py", "--config", str(cfg), "--data", str(data), "--nj", "2"]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    first = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    snap, wavs = _snapshot(data), _wav_state(data)
    second = subprocess.run(cmd, cwd=RECIPE, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    return {"data": data, "first": first, "second": second, "snap": snap, "wavs": wavs, "train": train, "test": test}


def _table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def test_ivr_prompts_are_the_vm_prompts_without_digits_or_notes():
    import real_speech

    if not real_speech.ASTERISK_TRANSCRIPTS.is_file():
        pytest.skip("asterisk-core-sounds-en (Debian) not installed")
    prompts = real_speech._asterisk_prompts(real_speech.ASTERISK_TRANSCRIPTS)
    names = [name for name, _ in prompts]
    assert names and all(name.startswith("vm-") for name in names)
    assert not any(re.search(r"[0-9\[\]]", text) for _, text in prompts)
    # the package's transcripts do have prompts with digits and other prompts: they are left out
    import gzip

    lines = gzip.open(real_speech.ASTERISK_TRANSCRIPTS, "rt", errors="replace").read().splitlines()
    assert any(line.startswith("vm-") and re.search("[0-9]", line.split(":", 1)[1]) for line in lines if ":" in line)
    utts = real_speech.read_source("ivr")
    assert {u.key for u in utts} <= set(names) and all(u.path.suffix == ".g722" and u.path.is_file() for u in utts)
    assert all(S.normalize_text(u.text) == u.text for u in utts)


def test_corpus_data_dirs_validate(tiny_corpus):
    sys.path.insert(0, str(ROOT))
    from asr.data.datadir import validate_data_dir

    data = tiny_corpus["data"]
    for s in ("train", "dev", "test_unseen", "test_real"):
        assert validate_data_dir(data / s) > 0
        assert set(_table(data / s / "utt2dur")) == set(_table(data / s / "utt2spk"))
    assert "corpus summary" in tiny_corpus["first"].stdout


def test_corpus_wavs_and_texts(tiny_corpus):
    data = tiny_corpus["data"]
    for s in ("train", "dev", "test_unseen", "test_real"):
        durs = _table(data / s / "utt2dur")
        for utt, path in _table(data / s / "wav.scp").items():
            assert os.path.isabs(path) and path.startswith(str(data / "wav" / s))
            info = sf.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames > 1600 and abs(info.duration - float(durs[utt])) < 1e-2
        for utt, text in _table(data / s / "text").items():
            assert re.fullmatch(r"[a-z']+( [a-z']+)*", text) and S.normalize_text(text) == text, (utt, text)
            assert re.fullmatch(r"[A-Za-z0-9_-]+", utt)
    aug = [u for u in _table(data / "train" / "utt2spk") if u.endswith("-aug")]
    assert aug, "augmented copies expected with fraction 0.5"
    assert all(_table(data / "train" / "utt2spk")[u] == u.split("-")[0] for u in aug)


def test_corpus_splits_are_honest(tiny_corpus):
    data = tiny_corpus["data"]
    spk = {s: set(_table(data / s / "utt2spk").values()) for s in ("train", "dev", "test_unseen")}
    assert spk["test_unseen"] and not spk["test_unseen"] & spk["train"] and not spk["test_unseen"] & spk["dev"]
    assert spk["train"] == {V.Voice.parse(v).name for v in tiny_corpus["train"]}
    texts = {s: set(_table(data / s / "text").values()) for s in ("train", "dev", "test_unseen")}
    assert not texts["test_unseen"] & texts["train"] and not texts["dev"] & texts["train"]


def test_corpus_resume_is_a_noop(tiny_corpus):
    data = tiny_corpus["data"]
    assert _wav_state(data) == tiny_corpus["wavs"], "second run rewrote or added wavs"
    assert _snapshot(data) == tiny_corpus["snap"], "second run changed the data dirs"
    assert "nothing synthesized this run" in tiny_corpus["second"].stdout


def test_written_transcripts_keep_case_and_punctuation(tiny_corpus, tmp_path):
    """``transcripts: written``: the same corpus (same wavs) with the sentences as written."""
    cfg = tmp_path / "written.yaml"
    cfg.write_text(
        "transcripts: written\n"
        + TINY_CONFIG.format(n_train=6 * len(tiny_corpus["train"]), train=tiny_corpus["train"], test=tiny_corpus["test"])
    )
    data = tmp_path / "data"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "local/make_corpus.py", "--config", str(cfg), "--data", str(data), "--nj", "2"],
        cwd=RECIPE,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("train", "dev", "test_unseen"):
        written, plain = _table(data / name / "text"), _table(tiny_corpus["data"] / name / "text")
        assert set(written) == set(plain)
        assert all(S.normalize_text(written[u]) == plain[u] for u in plain)  # scoring sees the same words
    texts = list(_table(data / "train" / "text").values())
    assert any(re.search(r"[A-Z]", t) for t in texts) and any(re.search(r"[.,;:!?]", t) for t in texts)
