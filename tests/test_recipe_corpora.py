"""recipes/librispeech and recipes/aishell end to end on miniature corpora in the official layouts.

No real corpus is reachable here, so each test builds a handful of utterances with espeak-ng in
the corpus's exact directory layout and file naming:

- LibriSpeech: ``LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``
  with ``<spk>-<chapter>.trans.txt`` (upper case) and ``SPEAKERS.TXT``;
- AISHELL-1: ``data_aishell/wav/<speaker>.tar.gz`` per speaker (members ``<set>/<speaker>/<utt>.wav``,
  Mandarin from ``espeak-ng -v cmn``, 16 kHz) and ``data_aishell/transcript/aishell_transcript_v0.8.txt``
  (space-separated words), with one transcript line without audio and one wav without a line.

Each recipe is copied into a temp dir and run as a user runs it (``./run.sh``, every stage) with
tiny models: a tiny Conformer on fbank and the tiny random GLM in stage 2 (LibriSpeech: units =
the tiny GLM's tokens with a tied classifier and the expected-embedding adapter; AISHELL:
character units and the MLP adapter, as the recipe's own configs use).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from asr.data.datadir import read_table, validate_data_dir

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _data_prep(script: str | Path, *args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a recipe's local/data_prep.py (a path, relative to ``cwd`` when given) with ``args``."""
    cmd = [sys.executable, str(script), *map(str, args)]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=ENV, timeout=120)


LIBRI_PREP = RECIPES / "librispeech/local/data_prep.py"
AISHELL_PREP = RECIPES / "aishell/local/data_prep.py"

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (Debian package espeak-ng)")

# ---- miniature corpora ----------------------------------------------------------------------------
LIBRI = {  # subset -> [(speaker, chapter, voice, [sentences])]
    "train-clean-100": [
        ("19", "198", "en-us+m3", ["THE CAT SAT ON THE MAT", "A DOG RAN IN THE PARK", "WE READ A BOOK TODAY", "THE SUN IS WARM"]),
        (
            "26",
            "495",
            "en+f2",
            ["THE BOAT SAILED ACROSS THE LAKE", "SHE OPENED THE WINDOW", "THE TRAIN LEAVES AT NINE", "GOOD MORNING TO YOU"],
        ),
    ],
    "dev-clean": [("84", "121123", "en-us+m7", ["THE BIRDS FLEW OVER THE WATER", "PLEASE CLOSE THE DOOR"])],
    "test-clean": [("121", "121726", "en+m4", ["THE CHILDREN PLAY IN THE PARK", "A CUP OF TEA"])],
}
SPEAKERS_TXT = """\
; Some comments
;ID  |SEX| SUBSET           |MINUTES| NAME
19   | F | train-clean-100  | 25.19 | Kara Shallenberg
26   | M | train-clean-100  | 25.08 | Denny Sayers
84   | F | dev-clean        |  8.02 | Christie Nowak
121  | F | test-clean       |  8.05 | Nikolle Doolin
"""

AISHELL = {  # speaker -> (set, [(utt suffix, words)])
    "S0002": (
        "train",
        [
            ("W0122", "而 对 楼市 成交 抑制 作用 最 大 的 限 购"),
            ("W0123", "也 成为 地方 政府 的 眼中 钉"),
            ("W0124", "自 六月 底 呼和浩特 市 率先 宣布 取消 限 购 后"),
            ("W0125", "今天 天气 很 好"),
        ],
    ),
    "S0003": (
        "train",
        [
            ("W0121", "我们 明天 去 北京"),
            ("W0122", "他 在 学校 学习 中文"),
            ("W0123", "这 是 一个 好 消息"),
            ("W0124", "请 打开 窗户"),
        ],
    ),
    "S0724": ("dev", [("W0121", "市场 价格 上涨"), ("W0122", "我 喜欢 喝 茶")]),
    "S0764": ("test", [("W0121", "城市 发展 很 快"), ("W0122", "明天 会 下雨")]),
}
AISHELL_NO_AUDIO = ("BAC009S0002W0999", "这 句 话 没有 录音")  # a transcript line without a wav
AISHELL_NO_TEXT = ("S0003", "BAC009S0003W0200", "没有 文本 的 录音")  # a wav without a transcript line


def _speak(text: str, voice: str, out: Path, fmt: str) -> None:
    """espeak-ng -> 16 kHz mono 16-bit ``fmt`` (FLAC or WAV) file at ``out``."""
    import soundfile as sf

    from asr.data.audio import read_audio

    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_name(out.name + ".espeak.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-s", "160", "-w", str(raw), text], check=True, capture_output=True)
    wave, rate = read_audio(raw, 16000)
    raw.unlink()
    sf.write(out, wave.numpy(), rate, subtype="PCM_16", format=fmt)


def build_librispeech(base: Path) -> Path:
    """A miniature LibriSpeech tree under ``base/LibriSpeech``; returns ``base``."""
    root = base / "LibriSpeech"
    root.mkdir(parents=True)
    (root / "SPEAKERS.TXT").write_text(SPEAKERS_TXT)
    for subset, speakers in LIBRI.items():
        for spk, chapter, voice, sentences in speakers:
            chapter_dir = root / subset / spk / chapter
            lines = []
            for i, text in enumerate(sentences):
                utt = f"{spk}-{chapter}-{i:04d}"
                _speak(text.lower(), voice, chapter_dir / f"{utt}.flac", "FLAC")
                lines.append(f"{utt} {text}\n")
            if subset.startswith("train") and spk == "19":
                lines.append(f"{spk}-{chapter}-0099 THIS LINE HAS NO AUDIO\n")
                _speak("no transcript", voice, chapter_dir / f"{spk}-{chapter}-0098.flac", "FLAC")
            (chapter_dir / f"{spk}-{chapter}.trans.txt").write_text("".join(lines))
    return base


def build_aishell(base: Path) -> Path:
    """A miniature AISHELL-1 release under ``base/data_aishell`` (speaker archives packed); returns ``base``."""
    root = base / "data_aishell"
    stage = base / "unpacked"
    lines = []
    for spk, (set_name, utts) in AISHELL.items():
        for suffix, words in utts:
            utt = f"BAC009{spk}{suffix}"
            _speak("".join(words.split()), "cmn", stage / spk / set_name / spk / f"{utt}.wav", "WAV")
            lines.append(f"{utt} {words}\n")
    spk, utt, words = AISHELL_NO_TEXT
    _speak("".join(words.split()), "cmn", stage / spk / "train" / spk / f"{utt}.wav", "WAV")
    lines.append(f"{AISHELL_NO_AUDIO[0]} {AISHELL_NO_AUDIO[1]}\n")
    (root / "transcript").mkdir(parents=True)
    (root / "transcript" / "aishell_transcript_v0.8.txt").write_text("".join(sorted(lines)), encoding="utf-8")
    (root / "wav").mkdir()
    for spk_dir in sorted(stage.iterdir()):
        with tarfile.open(root / "wav" / f"{spk_dir.name}.tar.gz", "w:gz") as tar:
            for member in sorted(spk_dir.iterdir()):  # the set folder: members <set>/<speaker>/<utt>.wav
                tar.add(member, arcname=member.name)
    shutil.rmtree(stage)
    return base


# ---- tiny configs -----------------------------------------------------------------------------------
TINY_TRAIN = "train: {max_epochs: 4, max_steps: 4, lr: 0.002, warmup_steps: 2, max_frames_per_batch: 1500, checkpoint_interval: 2, log_interval: 1}\n"
TINY_ENCODER = """\
features: {type: fbank, options: {num_mel_bins: 40}}
model:
  encoder_type: conformer
  conformer: {d_model: 32, num_layers: 1, num_heads: 2, ffn_dim: 64, kernel_size: 5, subsampling_channels: 8}
  d_model: 32
  cformer_layers: 1
  cformer_heads: 2
  cformer_ffn: 64
"""
TINY_LIBRI = (
    TINY_ENCODER.replace("model:\n", "model:\n  classifier: tied\n")
    + "tokenizer: {model_type: llm, llm: tiny-glm}\n"
    + TINY_TRAIN
)
TINY_AISHELL = TINY_ENCODER + "tokenizer: {model_type: char, vocab_size: 6000}\n" + TINY_TRAIN
TINY_LLM = """\
speech_llm:
  llm: {name_or_path: tiny-glm}
  adapter: {mode: MODE, hidden_dim: 32}
train: {max_epochs: 1, max_steps: 3, lr: 0.002, warmup_steps: 1, max_frames_per_batch: 3000, checkpoint_interval: 2, log_interval: 1}
decode: {beam_size: 2, batch_size: 4, cif_weight: CIF_WEIGHT}
"""


def _run_recipe(
    name: str, work: Path, corpus: Path, adapter_mode: str, model_cfg: str, extra: list[str], cif_weight: float = 0.0
) -> subprocess.CompletedProcess:
    for item in ("run.sh", "asr.sh", "path.sh", "utils", "local", "conf"):
        src = RECIPES / name / item
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, work / item)
    (work / "conf" / "tiny.yaml").write_text(model_cfg)
    (work / "conf" / "tiny_llm.yaml").write_text(TINY_LLM.replace("MODE", adapter_mode).replace("CIF_WEIGHT", str(cif_weight)))
    cmd = [
        "bash",
        "run.sh",
        "--nj",
        "1",
        "--corpus-dir",
        str(corpus),
        "--config",
        "conf/tiny.yaml",
        "--llm-config",
        "conf/tiny_llm.yaml",
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=ENV, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def libri_run(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (Debian package espeak-ng)")
    corpus = build_librispeech(tmp_path_factory.mktemp("libri_corpus"))
    work = tmp_path_factory.mktemp("librispeech")
    # train-* subsets found automatically; one evaluation subset named (dev-clean is in the tree but left
    # out), so --test-sets auto must resolve to test_clean alone (one decoded set keeps the test short)
    return (
        work,
        corpus,
        _run_recipe(
            "librispeech",
            work,
            corpus,
            "expected_embedding",
            TINY_LIBRI,
            ["--test-subsets", "test-clean", "--valid-set", "test_clean"],
            cif_weight=1.0,
        ),
    )


@pytest.fixture(scope="module")
def aishell_run(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("needs espeak-ng (Debian package espeak-ng)")
    corpus = build_aishell(tmp_path_factory.mktemp("aishell_corpus"))
    work = tmp_path_factory.mktemp("aishell")
    # stages 3 and 5 through torchrun, as a multi-GPU run launches them (one process here), behind a
    # wrapper that records what it was asked to run
    launcher = work / "launch.sh"
    launcher.write_text(
        '#!/usr/bin/env bash\necho "$*" >> launched.txt\nexec torchrun --standalone --nproc_per_node=1 -m asr.cli.main "$@"\n'
    )
    launcher.chmod(0o755)
    return (
        work,
        corpus,
        _run_recipe("aishell", work, corpus, "mlp", TINY_AISHELL, ["--test-sets", "test", "--train-cmd", "./launch.sh"]),
    )


def _check_stages(work: Path, sets: list[str], test_sets: list[str], metric: str) -> None:
    """Stages 1-7: features, units, both trainings, both decoders scored, results table, export."""
    for s in sets:
        dump = work / "dump" / "fbank" / s
        feats = read_table(dump / "feats.scp")
        assert feats and set(feats) == set(read_table(work / "data" / s / "utt2spk"))
        assert json.loads((dump / "feat_info.json").read_text())["dim"] == 40
    assert (work / "dump/fbank/train/cmvn.ark").stat().st_size > 0
    exp = work / "exp" / "tiny"
    assert (exp / "checkpoints/step_00000004.pt").exists()
    assert {"config.json", "model.safetensors", "feat_info.json"} <= {p.name for p in (exp / "final").iterdir()}
    llm_exp = exp / "tiny_llm"
    assert {"adapter.safetensors", "speech_llm.json", "stage1.json"} <= {p.name for p in (llm_exp / "final").iterdir()}
    table = (exp / "RESULTS.md").read_text()
    assert f" {metric} " in table.splitlines()[0]  # the results table's header names the metric
    for s in test_sets:
        for d in (exp / f"decode_cif_{s}", llm_exp / f"decode_llm_{s}"):
            hyp, ref = read_table(d / "hyp", allow_empty_value=True), read_table(d / "ref")
            assert hyp and set(hyp) <= set(ref)
            assert (d / metric.lower()).read_text().startswith(f"%{metric} ")
            assert json.loads((d / "scores.json").read_text())["unit"] == ("char" if metric == "CER" else "word")
            assert str(d.relative_to(work)) in table
    exported = json.loads((llm_exp / "model" / "export.json").read_text())
    assert exported["kind"] == "speech_llm"
    cif_weight = json.loads((llm_exp / f"decode_llm_{test_sets[0]}" / "decode_info.json").read_text())["cif_weight"]
    assert exported["decode"] == {"beam_size": 2, "cif_weight": cif_weight}  # the LLM config's decode section


# ---- LibriSpeech ----------------------------------------------------------------------------------------
@needs_espeak
@pytest.mark.slow
def test_librispeech_stage0_data_dirs(libri_run):
    work, _, proc = libri_run
    for s in ("train", "test_clean"):
        assert validate_data_dir(work / "data" / s) > 0
    assert not (work / "data" / "dev_clean").exists()  # only the subsets asked for are prepared
    text = read_table(work / "data/train/text")
    assert len(text) == 8 and text["19-198-0000"] == "the cat sat on the mat"
    wav = read_table(work / "data/train/wav.scp")
    assert wav["26-495-0001"].endswith("LibriSpeech/train-clean-100/26/495/26-495-0001.flac")
    assert set(read_table(work / "data/train/utt2spk").values()) == {"19-198", "26-495"}
    assert read_table(work / "data/train/spk2gender") == {"19-198": "f", "26-495": "m"}
    durs = read_table(work / "data/test_clean/utt2dur")
    assert all(0.3 < float(v) < 10 for v in durs.values())
    summary = json.loads((work / "data/local/data_prep.json").read_text())
    assert summary["train_subsets"] == ["train-clean-100"] and summary["test_subsets"] == ["test-clean"]
    counts = summary["subsets"]["train-clean-100"]
    assert counts["transcript_without_audio"] == 1 and counts["audio_without_transcript"] == 1


@needs_espeak
@pytest.mark.slow
def test_librispeech_all_stages(libri_run):
    work, _, proc = libri_run
    _check_stages(work, ["train", "test_clean"], ["test_clean"], "WER")
    info = json.loads((work / "exp/tiny/tiny_llm/decode_llm_test_clean/decode_info.json").read_text())
    assert info["cif_weight"] == 1.0  # LLM-token units: stage 6 decodes with CIF fusion
    assert not (work / "exp/tiny/decode_cif_dev_clean").exists()
    units = json.loads((work / "exp/tiny/tokenizer/units.llm/units.json").read_text())
    assert units["llm"] == "tiny-glm"
    assert "%WER" in proc.stdout


@needs_espeak
@pytest.mark.slow
def test_librispeech_data_prep_takes_every_subset_present_by_default(libri_run):
    work, corpus, _ = libri_run
    proc = _data_prep(
        "local/data_prep.py", "--corpus-dir", corpus / "LibriSpeech", "--data", "data_auto", "--case", "upper", cwd=work
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((work / "data_auto/local/data_prep.json").read_text())
    assert summary["train_subsets"] == ["train-clean-100"] and summary["test_subsets"] == ["dev-clean", "test-clean"]
    assert validate_data_dir(work / "data_auto/dev_clean") == 2
    assert read_table(work / "data_auto/dev_clean/text")["84-121123-0001"] == "PLEASE CLOSE THE DOOR"


# ---- AISHELL-1 -------------------------------------------------------------------------------------------
@needs_espeak
@pytest.mark.slow
def test_aishell_stage0_untar_and_data_dirs(aishell_run):
    work, corpus, proc = aishell_run
    wav_dir = corpus / "data_aishell" / "wav"
    for spk, (set_name, _) in AISHELL.items():
        assert (wav_dir / f".{spk}.tar.gz.done").exists() and (wav_dir / f"{spk}.tar.gz").exists()
        assert (wav_dir / set_name / spk).is_dir()
    assert not list(wav_dir.glob(".untar-*"))
    for s in ("train", "dev", "test"):
        assert validate_data_dir(work / "data" / s) > 0
    text = read_table(work / "data/train/text")
    assert text["BAC009S0002W0122"] == "而对楼市成交抑制作用最大的限购"  # words joined: character level
    assert AISHELL_NO_TEXT[1] not in text and AISHELL_NO_AUDIO[0] not in text
    assert len(text) == 8
    assert read_table(work / "data/train/utt2spk")["BAC009S0003W0121"] == "BAC009S0003"
    summary = json.loads((work / "data/local/data_prep.json").read_text())
    assert summary["transcript_without_audio"] == 1
    assert summary["data_dirs"]["train"]["audio_without_transcript"] == 1
    assert summary["data_dirs"]["dev"]["utterances"] == 2 and summary["data_dirs"]["test"]["utterances"] == 2


@needs_espeak
@pytest.mark.slow
def test_aishell_all_stages_scored_by_cer(aishell_run):
    work, _, proc = aishell_run
    _check_stages(work, ["train", "dev", "test"], ["test"], "CER")
    launched = (work / "launched.txt").read_text().splitlines()  # --train-cmd ran both trainings
    assert [line.split()[0] for line in launched] == ["train", "train-llm"]
    assert (work / "exp/tiny/tokenizer/units.model").exists()
    assert "%CER" in proc.stdout and "CER" in (work / "exp/tiny/RESULTS.md").read_text()
    ref = read_table(work / "exp/tiny/decode_cif_test/ref")
    assert ref["BAC009S0764W0121"] == "城市发展很快"


@needs_espeak
@pytest.mark.slow
def test_aishell_stage0_rerun_does_not_unpack_again(aishell_run):
    work, corpus, _ = aishell_run
    proc = _data_prep("local/data_prep.py", "--corpus-dir", corpus, "--data", "data2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "0 unpacked now, 4 already done" in proc.stderr
    assert read_table(work / "data2/test/text") == read_table(work / "data/test/text")


# ---- errors that name what is wrong (no audio needed) ----------------------------------------------------
def test_librispeech_data_prep_rejects_a_wrong_layout(tmp_path):
    (tmp_path / "corpus" / "flacs").mkdir(parents=True)
    proc = _data_prep(LIBRI_PREP, "--corpus-dir", tmp_path / "corpus", "--data", tmp_path / "data")
    assert proc.returncode == 1
    assert f"{tmp_path / 'corpus'}: no LibriSpeech subset found" in proc.stderr and "LibriSpeech/<subset>" in proc.stderr


def test_librispeech_data_prep_names_a_bad_transcript_line(tmp_path):
    chapter = tmp_path / "LibriSpeech" / "dev-clean" / "84" / "121123"
    chapter.mkdir(parents=True)
    (chapter / "84-121123.trans.txt").write_text("84-121123-0000 HELLO\n85-121123-0001 WRONG SPEAKER\n")
    proc = _data_prep(
        LIBRI_PREP,
        "--corpus-dir",
        tmp_path,
        "--train-subsets",
        "auto",
        "--test-subsets",
        "dev-clean",
        "--data",
        tmp_path / "data",
    )
    assert proc.returncode == 1
    assert "no training subset" in proc.stderr
    (tmp_path / "LibriSpeech" / "train-clean-100").mkdir()
    proc = _data_prep(LIBRI_PREP, "--corpus-dir", tmp_path, "--train-subsets", "train-clean-360", "--data", tmp_path / "data")
    assert proc.returncode == 1 and "train-clean-360: subset 'train-clean-360' not found" in proc.stderr


def test_aishell_data_prep_rejects_a_wrong_layout(tmp_path):
    proc = _data_prep(AISHELL_PREP, "--corpus-dir", tmp_path, "--data", tmp_path / "data")
    assert proc.returncode == 1
    assert f"{tmp_path}/data_aishell/transcript/aishell_transcript_v0.8.txt" in proc.stderr
    (tmp_path / "data_aishell" / "wav").mkdir(parents=True)
    (tmp_path / "data_aishell" / "wav" / "S0002.tar.gz").write_bytes(b"not a tar file")
    proc = _data_prep(AISHELL_PREP, "--corpus-dir", tmp_path, "--data", tmp_path / "data")
    assert proc.returncode == 1 and "S0002.tar.gz: cannot unpack" in proc.stderr
    assert not (tmp_path / "data_aishell" / "wav" / ".S0002.tar.gz.done").exists()


def test_run_sh_requires_corpus_dir(tmp_path):
    for name in ("librispeech", "aishell"):
        proc = subprocess.run(
            ["bash", str(RECIPES / name / "run.sh"), "--stop-stage", "0"], capture_output=True, text=True, env=ENV
        )
        assert proc.returncode == 1 and "--corpus-dir is required" in proc.stderr


# ---- the recipes' own configs parse (no weights are loaded) ----------------------------------------------
@pytest.mark.parametrize("recipe", ["librispeech", "aishell"])
def test_recipe_configs_parse(recipe):
    from asr.config import load_config
    from asr.models.cif_asr import CifAsrConfig
    from asr.models.speech_llm import SpeechLlmConfig
    from asr.training.trainer import TrainConfig

    confs = sorted((RECIPES / recipe / "conf").glob("*.yaml"))
    stage1 = [c for c in confs if c.name.startswith("cformer_")]
    stage2 = [c for c in confs if c.name.startswith("llm_")]
    assert len(stage1) == 3 and len(stage2) == 5
    for path in stage1:
        c = load_config(path)
        model = CifAsrConfig.from_dict(c["model"])
        TrainConfig.from_dict(c["train"])
        assert c["features"]["type"] in ("fbank", "whisper_encoder")
        tok = c["tokenizer"]
        if recipe == "aishell":
            assert tok["model_type"] in ("char", "llm"), path
        assert (tok["model_type"] == "llm") == (model.classifier == "tied"), path
        _one_training_step(c, path)
    families = set()
    for path in stage2:
        c = load_config(path)
        sl = SpeechLlmConfig.from_dict(c["speech_llm"])
        TrainConfig.from_dict(c["train"])
        families.add(sl.llm.name_or_path)
        assert sl.adapter.mode == ("expected_embedding" if path.stem.endswith("_tied") else "mlp"), path
        if "chatglm3" in path.name:
            assert sl.llm.trust_remote_code
    assert {"Qwen/Qwen2.5-1.5B-Instruct", "smollm2-135m-instruct"} <= families
    assert any("chatglm3" in f for f in families) and any("glm-4-9b" in f for f in families)


def _one_training_step(config: dict, path: Path) -> None:
    """The full-size stage-1 model of ``config`` builds and takes a forward/backward step on random input.

    Feature dims: 80 (fbank) or 768 (Whisper-small's encoder); a tied classifier gets Qwen2.5-1.5B's
    hidden size (1536) with a zero table, as when no LLM is at hand.
    """
    import torch

    from asr.models.cif_asr import CifAsrConfig, CifAsrModel

    feat_dim = 80 if config["features"]["type"] == "fbank" else 768
    extra = {"tied_dim": 1536} if config["model"].get("classifier") == "tied" else {}
    model_cfg = CifAsrConfig.from_dict({**config["model"], "feat_dim": feat_dim, "vocab_size": 300, **extra})
    model = CifAsrModel(model_cfg).train()
    torch.manual_seed(0)
    frames = 200 if feat_dim == 80 else 50  # 2 s of fbank, or of 25 Hz cached encoder frames
    feats, lengths = torch.randn(2, frames, feat_dim), torch.tensor([frames, frames - 30])
    targets, target_lengths = torch.randint(2, 300, (2, 9)), torch.tensor([9, 7])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small ops: one thread is faster on a busy 2-core machine
    try:
        out = model(feats, lengths, targets, target_lengths)
        out["loss"].backward()
    finally:
        torch.set_num_threads(threads)
    assert torch.isfinite(out["loss"]), path
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), path


def test_chinese_character_units_round_trip(tmp_path):
    from asr.tokenizer import load_tokenizer, train_tokenizer

    text = tmp_path / "text"
    lines = {f"BAC009S0002W{i:04d}": "".join(w.split()) for i, (_, w) in enumerate(AISHELL["S0002"][1] + AISHELL["S0003"][1])}
    text.write_text("".join(f"{k} {v}\n" for k, v in sorted(lines.items())), encoding="utf-8")
    tok = load_tokenizer(train_tokenizer(text, tmp_path / "units", vocab_size=6000, model_type="char"))
    chars = {ch for v in lines.values() for ch in v}
    assert len(tok) == len(chars) + 3  # blank, unk, the word-start piece, one unit per character
    for sentence in lines.values():
        ids = tok.encode(sentence)
        assert len(ids) == len(sentence) + 1 and tok.decode(ids) == sentence
