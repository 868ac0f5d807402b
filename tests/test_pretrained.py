"""The model shipped in the package (asr/pretrained/): what `asr transcribe FILE` uses without --model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr import pretrained
from evaluation.normalize import get_normalizer

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")


def _reference(stem: str) -> str:
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if line.rstrip().endswith(f"({stem})"):
            return line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "").strip()
    raise KeyError(stem)


def _word_errors(ref: str, hyp: str) -> float:
    import jiwer

    norm = get_normalizer("english")
    return jiwer.wer(norm(ref), norm(hyp))


def test_the_default_is_shipped_and_small():
    model_dir = pretrained.resolve_model(None)
    assert model_dir == pretrained.PACKAGE_DIR / pretrained.DEFAULT_MODEL
    assert json.loads((model_dir / "export.json").read_text())["kind"] in ("cif", "speech_llm")
    total = sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file())
    assert total < 60e6  # trained parts only, fp16; Whisper's weights come from their package
    assert (model_dir / "MODEL.md").is_file()


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="pocketsphinx-testdata (Debian) not installed")
def test_transcribe_a_real_recording_without_model_option(tmp_path):
    wav = sorted(LIBRIVOX.glob("*.wav"))[0]
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "asr"), "transcribe", "-o", str(tmp_path), "-f", "json", str(wav)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / f"{wav.stem}.json").read_text())
    assert proc.stdout.strip().splitlines()[0].startswith("[00:00")  # whisper-style segment lines
    # a human reading Austen: most words right (the model's WER on test_real is in the README)
    assert _word_errors(_reference(wav.stem), doc["text"]) < 0.5, doc["text"]


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="pocketsphinx-testdata (Debian) not installed")
def test_python_api_with_the_default_model():
    import asr

    wav = sorted(LIBRIVOX.glob("*.wav"))[1]
    result = asr.load_model(device="cpu").transcribe(wav)
    assert _word_errors(_reference(wav.stem), result["text"]) < 0.5, result["text"]
    words = [w for seg in result["segments"] for w in seg["words"]]
    assert words and all(0 <= w["start"] <= w["end"] for w in words)


@pytest.mark.skipif(not LIBRIVOX.is_dir(), reason="pocketsphinx-testdata (Debian) not installed")
def test_the_default_reads_with_whispers_decoder_and_keeps_its_cformer_pass():
    import asr

    wav = sorted(LIBRIVOX.glob("*.wav"))[0]
    read = asr.load_model(device="cpu").transcribe(wav)["text"]  # decoding "read": the shipped config's
    parallel = asr.load_model(device="cpu", decoding="parallel").transcribe(wav)["text"]
    assert parallel == parallel.lower()  # the C-Former's pass writes as its training text: lowercase
    assert read != read.lower() and any(ch in read for ch in ",.")  # Whisper's decoder: case, punctuation
    ref = _reference(wav.stem)
    assert _word_errors(ref, read) < _word_errors(ref, parallel), (read, parallel)
