"""`asr transcribe`: inputs (formats, directories, wav.scp), chunking of long audio, batching, output
formats, token/word times, bad files skipped. The model is a tiny random one: transcripts are noise,
the plumbing and the timing rules are what is tested."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr.cli.main import main
from asr.data.audio import read_audio, write_wav
from asr.data.datadir import read_table
from asr.decoding.cif_recognizer import cif_token_times
from asr.decoding.hypothesis import Hypothesis, Word
from asr.decoding.recognizers import load_recognizer
from asr.decoding.segmenter import speech_chunks, speech_regions, split_on_silence
from asr.decoding.transcribe import AudioInput, collect_inputs, transcribe_inputs
from asr.decoding.writers import Segment, Transcript, cues, format_timestamp, to_srt, to_tsv, to_vtt
from asr.models.cif_asr import CifAsrConfig, CifAsrModel
from asr.models.conformer_encoder import ConformerConfig
from asr.tokenizer import Tokenizer, train_tokenizer
from asr.training.train_cif import finalize_model_dir


@pytest.fixture(scope="module")
def model_dir(espeak_dir, tmp_path_factory) -> Path:
    """A randomly initialised fbank model dir (transcripts are noise; the plumbing is what is tested)."""
    root = tmp_path_factory.mktemp("model")
    tok = Tokenizer(train_tokenizer(espeak_dir / "text", root / "units", vocab_size=30, model_type="char"))
    torch.manual_seed(0)
    cfg = CifAsrConfig(
        vocab_size=len(tok),
        feat_dim=80,
        d_model=32,
        cformer_layers=1,
        cformer_heads=2,
        cformer_ffn=64,
        conformer=ConformerConfig(d_model=32, num_layers=1, num_heads=2, ffn_dim=64, kernel_size=5, subsampling_channels=8),
    )
    model = CifAsrModel(cfg)  # random alphas are near 0.5: CIF fires about every other frame
    model.save_pretrained(root / "final")
    finalize_model_dir(root / "final", tok, {"feature_type": "fbank", "options": {}, "dim": 80, "frame_rate_hz": 100.0})
    return root / "final"


@pytest.fixture(scope="module")
def wavs(espeak_dir) -> list[str]:
    return [p for p in read_table(espeak_dir / "wav.scp").values() if not p.endswith("|")]


def _asr(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).parent / "asr"), *map(str, args)], capture_output=True, text=True)


SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


def _seconds(h, m, s, ms) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def check_outputs(out: Path, name: str, duration: float | None = None) -> dict:
    """All five outputs of one file exist, agree, and have ordered times inside the audio; returns the json."""
    doc = json.loads((out / f"{name}.json").read_text())
    dur = doc["duration"]
    if duration is not None:
        assert dur == pytest.approx(duration, abs=2e-3)
    assert doc["text"] == (out / f"{name}.txt").read_text().strip()
    segs = doc["segments"]
    assert 0 <= segs[0]["start"] and segs[-1]["end"] <= dur + 2e-3
    assert all(a["start"] < a["end"] <= b["start"] for a, b in zip(segs, segs[1:]))  # in order; long pauses left out
    assert [s["id"] for s in segs] == list(range(len(segs))) and doc["language"] == "en"
    doc["words"] = [w for s in segs for w in s["words"]]  # whisper keeps words inside their segment
    for w in doc["words"]:
        assert set(w) == {"word", "start", "end", "probability"} and w["word"].startswith(" ")
        assert 0 < w["probability"] <= 1
    for key, label in (("words", "word"), ("tokens", "token")):
        items = doc[key]
        assert all(0 <= x["start"] <= x["end"] <= dur + 1e-3 for x in items), key
        assert all(a["end"] <= b["start"] for a, b in zip(items, items[1:])), key  # in order, not overlapping
        assert all(x[label] for x in items)
    assert " ".join(s["text"] for s in segs if s["text"]) == doc["text"]

    srt = (out / f"{name}.srt").read_text()
    blocks = [b.splitlines() for b in srt.strip().split("\n\n")] if srt.strip() else []
    srt_times = []
    for i, block in enumerate(blocks, 1):
        assert block[0] == str(i) and len(block) >= 3
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", block[1])
        assert m, block[1]
        srt_times.append((_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])))
    vtt = (out / f"{name}.vtt").read_text().splitlines()
    assert vtt[0] == "WEBVTT"
    vtt_times = [
        (_seconds(*m.groups()[:4]), _seconds(*m.groups()[4:]))
        for line in vtt
        if (m := re.fullmatch(SRT_TIME.replace(",", r"\.") + " --> " + SRT_TIME.replace(",", r"\."), line))
    ]
    tsv = (out / f"{name}.tsv").read_text().splitlines()
    assert tsv[0] == "start\tend\ttext"
    tsv_times = [(int(s) / 1000, int(e) / 1000) for s, e, _ in (row.split("\t") for row in tsv[1:])]
    assert srt_times == vtt_times == tsv_times and len(srt_times) == len(blocks)
    flat = [t for pair in srt_times for t in pair]
    assert flat == sorted(flat) and all(0 <= t <= dur + 1e-3 for t in flat)
    return doc


# ---- the command --------------------------------------------------------------------------------
def test_transcribe_files_and_skip_bad_one(model_dir, wavs, tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not audio")
    out = tmp_path / "out"
    proc = _asr("transcribe", "--model", model_dir, "-o", out, "-f", "all", wavs[0], bad, wavs[1])
    assert proc.returncode == 1  # something failed, and the exit status says so
    assert "broken.wav: skipped" in proc.stderr and "1 of 3 file(s) failed" in proc.stderr
    assert "real-time factor" in proc.stderr and "peak memory" in proc.stderr
    for wav in wavs[:2]:
        check_outputs(out, Path(wav).stem, sf.info(wav).duration)
    assert not list(out.glob("broken.*"))


def test_formats_rates_and_channels(model_dir, wavs, tmp_path):
    wave, _ = read_audio(wavs[2], 44100)
    stereo = np.stack([wave.numpy(), 0.5 * wave.numpy()], axis=1)
    files = {
        "stereo44k.wav": dict(samplerate=44100, subtype="PCM_16"),
        "a.flac": dict(samplerate=44100, subtype="PCM_24"),
        "b.ogg": dict(samplerate=44100, subtype="VORBIS"),
        "c.opus": dict(samplerate=48000, format="OGG", subtype="OPUS"),
        "d.mp3": dict(samplerate=44100, subtype="MPEG_LAYER_III"),
    }
    for name, kw in files.items():
        data = stereo if name.startswith("stereo") else wave.numpy()
        if kw["samplerate"] != 44100:
            data = read_audio(wavs[2], kw["samplerate"])[0].numpy()
        sf.write(tmp_path / name, data, **kw)
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), *(str(tmp_path / n) for n in files)]) == 0
    for name in files:
        check_outputs(out, Path(name).stem, sf.info(tmp_path / name).duration)


def test_directory_input_recursive(model_dir, wavs, tmp_path, capsys):
    src = tmp_path / "audio"
    for i, wav in enumerate(wavs[:3]):
        dest = src / ("sub" if i else "") / Path(wav).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(Path(wav).read_bytes())
    (src / "notes.txt").write_text("not audio\n")
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), "-f", "json", str(src)]) == 0
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.json"))
    assert names == sorted([f"{Path(wavs[0]).stem}.json"] + [f"sub/{Path(w).stem}.json" for w in wavs[1:3]])
    printed = capsys.readouterr().out  # each file's name, then its segments as whisper prints them
    assert Path(wavs[1]).name in printed
    doc = json.loads((out / f"{Path(wavs[0]).stem}.json").read_text())
    first = doc["segments"][0]
    assert f"[00:{first['start']:06.3f} --> 00:{first['end']:06.3f}] {first['text']}" in printed
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), "-f", "json", "--quiet", str(src)]) == 0
    assert capsys.readouterr().out == ""


def test_whisper_spelling_and_json_shape(model_dir, wavs, tmp_path):
    out = tmp_path / "out"
    proc = _asr("transcribe", "--model", model_dir, "--output_dir", out, "--output_format", "json", "--batch_size", "2", wavs[0])
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in out.iterdir()] == [f"{Path(wavs[0]).stem}.json"]
    doc = json.loads((out / f"{Path(wavs[0]).stem}.json").read_text())
    assert {"text", "language", "segments"} <= set(doc)
    seg = doc["segments"][0]
    assert {"id", "start", "end", "text", "words"} <= set(seg)
    assert {"word", "start", "end", "probability"} == set(seg["words"][0])
    assert "".join(w["word"] for s in doc["segments"] for w in s["words"]).strip() == doc["text"]


def test_kaldi_text_output_and_bad_output_dir(model_dir, espeak_dir, tmp_path):
    scp = read_table(espeak_dir / "wav.scp")
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), "-f", "kaldi", "-q", str(espeak_dir / "wav.scp")]) == 0
    assert [p.name for p in out.iterdir()] == ["text"]
    text = read_table(out / "text", allow_empty_value=True)
    assert sorted(text) == sorted(scp)
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a dir\n")
    proc = _asr("transcribe", "--model", model_dir, "-o", blocker / "sub", next(iter(scp.values())))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("asr transcribe: error: cannot create the output dir")


def test_python_api(model_dir, wavs):
    import asr

    model = asr.load_model(model_dir, device="cpu")
    result = model.transcribe(wavs[0])
    assert {"text", "language", "segments"} <= set(result) and result["segments"][0]["words"]
    wave = read_audio(wavs[0], 16000)[0].numpy()
    assert model.transcribe(wave) == result  # a waveform at 16 kHz, as whisper takes one
    with pytest.raises(ValueError, match="1-D"):
        model.transcribe(np.zeros((2, 16000), dtype=np.float32))


def test_wav_scp_inputs(model_dir, espeak_dir, tmp_path):
    scp = read_table(espeak_dir / "wav.scp")  # one entry is a sox pipe at 8 kHz
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), "-f", "txt", str(espeak_dir / "wav.scp")]) == 0
    assert sorted(p.stem for p in out.glob("*.txt")) == sorted(scp)
    other = tmp_path / "list.scp"
    other.write_text("".join(f"{k} {v}\n" for k, v in list(scp.items())[:2]))
    assert main(["transcribe", "--model", str(model_dir), "-o", str(tmp_path / "o2"), "--wav-scp", str(other)]) == 0
    for utt in list(scp)[:2]:
        check_outputs(tmp_path / "o2", utt)


def _ten_minutes(wavs: list[str], path: Path) -> list[tuple[int, int]]:
    """Write espeak utterances separated by 0.3-2 s of silence, 600 s at 16 kHz; returns the speech spans (samples)."""
    speech = [read_audio(w, 16000)[0].numpy() for w in wavs]
    rng = np.random.default_rng(0)
    pieces, spans, pos, k = [], [], 0, 0
    while pos < 600 * 16000:
        gap = np.zeros(int(rng.uniform(0.3, 2.0) * 16000), dtype=np.float32)
        utt = speech[k % len(speech)]
        pieces += [gap, utt]
        spans.append((pos + len(gap), pos + len(gap) + len(utt)))
        pos, k = pos + len(gap) + len(utt), k + 1
    wave = np.concatenate(pieces)[: 600 * 16000]
    write_wav(path, wave, 16000)
    return spans


def test_ten_minute_file(model_dir, wavs, tmp_path):
    long_wav = tmp_path / "long.wav"
    speech = _ten_minutes(wavs, long_wav)
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), "--batch-size", "4", str(long_wav)]) == 0
    doc = check_outputs(out, "long", 600.0)
    segs = doc["segments"]
    assert 30 <= len(segs) <= len(speech) and all(s["end"] - s["start"] <= 20.0 for s in segs)
    wave = read_audio(long_wav, 16000)[0]
    for a, b in zip(segs, segs[1:]):  # every cut falls into an inserted silence; every pause left out is quiet
        left, right = round(a["end"] * 16000), round(b["start"] * 16000)
        if left == right:
            assert not any(s < left < e for s, e in speech), left
        else:
            assert right - left >= 0.8 * 16000 and float(wave[left:right].abs().max()) < 10 ** (-55 / 20), (left, right)
    for s in segs:  # each chunk's tokens were shifted into the chunk
        tokens = [t for t in doc["tokens"] if s["start"] <= t["start"] < s["end"]]
        assert all(t["end"] <= s["end"] + 1e-3 for t in tokens)
    assert len(doc["tokens"]) > 1000


def test_two_utterances_joined_by_two_seconds_of_silence(model_dir, wavs, tmp_path):
    """The random model fires about every other frame, silence or not: nothing may be placed in the gap."""
    first, second = (read_audio(w, 16000)[0].numpy() for w in wavs[:2])
    gap = np.zeros(2 * 16000, dtype=np.float32)
    write_wav(tmp_path / "joined.wav", np.concatenate([first, gap, second]), 16000)
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), str(tmp_path / "joined.wav")]) == 0
    doc = check_outputs(out, "joined", (len(first) + len(gap) + len(second)) / 16000)
    g0, g1 = len(first) / 16000, (len(first) + len(gap)) / 16000
    pad = 0.1 + 0.025  # speech_regions keeps 0.1 s of a pause next to the speech (on 25 ms frame edges)
    (a, b) = doc["segments"]  # (espeak's own leading/trailing silence may be left out too)
    assert a["end"] <= g0 + pad + 1e-3 and b["start"] >= g1 - pad - 1e-3
    for key in ("tokens", "words"):
        before = [x for x in doc[key] if x["end"] <= g0 + pad + 1e-3]
        after = [x for x in doc[key] if x["start"] >= g1 - pad - 1e-3]
        assert before and after and len(before) + len(after) == len(doc[key]), key  # none inside the gap
        assert after[0]["start"] >= g1 - pad - 1e-3


def test_batching_does_not_change_results(model_dir, wavs):
    recognizer = load_recognizer(model_dir)
    inputs = [AudioInput(Path(w).stem, w) for w in wavs]
    one = {i.name: t.text for i, t in transcribe_inputs(recognizer, inputs, batch_size=1)}
    four = {i.name: t.text for i, t in transcribe_inputs(recognizer, inputs, batch_size=4)}
    assert one == four and len(one) == len(wavs)


# ---- inputs and recognizer selection ------------------------------------------------------------
def test_collect_inputs_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        collect_inputs([str(tmp_path / "empty")])
    with pytest.raises(ValueError, match="both be written as x"):
        collect_inputs(["a/x.wav", "b/x.flac"])


def test_export_dir_loads_the_speech_llm(tmp_path, monkeypatch):
    calls = {}

    class FakeLlm:
        def __init__(self, model_dir, device, beam_size, cif_weight, image, picture_guidance):
            calls.update(
                model_dir=model_dir,
                device=device,
                beam_size=beam_size,
                cif_weight=cif_weight,
                image=image,
                picture_guidance=picture_guidance,
            )

    monkeypatch.setitem(sys.modules, "asr.decoding.llm_recognizer", types.SimpleNamespace(SpeechLlmRecognizer=FakeLlm))
    (tmp_path / "export.json").write_text(json.dumps({"kind": "speech_llm"}))
    assert isinstance(load_recognizer(tmp_path, beam_size=4), FakeLlm)
    assert calls == {
        "model_dir": tmp_path,
        "device": "cpu",
        "beam_size": 4,
        "cif_weight": 0.0,
        "image": None,
        "picture_guidance": 0.0,
    }
    # the export's decoding defaults apply where the caller leaves an option out
    (tmp_path / "export.json").write_text(json.dumps({"kind": "speech_llm", "decode": {"beam_size": 3, "cif_weight": 1.5}}))
    load_recognizer(tmp_path)
    assert (calls["beam_size"], calls["cif_weight"]) == (3, 1.5)
    load_recognizer(tmp_path, beam_size=1, cif_weight=0.0)
    assert (calls["beam_size"], calls["cif_weight"]) == (1, 0.0)
    (tmp_path / "export.json").write_text(json.dumps({"kind": "multimodal"}))
    load_recognizer(tmp_path, image="pic.png", picture_guidance=0.7)  # passed on as given
    assert (calls["image"], calls["picture_guidance"]) == ("pic.png", 0.7)
    (tmp_path / "export.json").write_text(json.dumps({"kind": "other"}))
    with pytest.raises(ValueError, match="unknown kind"):
        load_recognizer(tmp_path)


# ---- token times --------------------------------------------------------------------------------
def test_token_start_after_a_pause():
    """Two tokens, then 2 s of frames with zero CIF weight, then a token: it starts after the pause."""
    fs = 0.04
    alphas = torch.tensor([0.5] * 4 + [0.0] * 50 + [0.3, 0.4, 0.3])  # frames 4..53 silent (2 s)
    starts, ends = cif_token_times(alphas, [1, 3, 56], fs)
    assert ends == [0.08, 0.16, 2.28]
    assert starts == [0.0, 0.08, 2.16]  # token 3: frame 54 (0.04 * 54), not right after token 2's fire
    assert starts[2] >= 54 * fs - 1e-9
    assert cif_token_times(torch.tensor([1.5, 0.5]), [0, 0, 1], fs) == ([0.0, 0.0, 0.04], [0.04, 0.04, 0.08])


# ---- segmenter ----------------------------------------------------------------------------------
def _bursts(pattern: list[tuple[float, bool]], rate: int = 16000) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Tone bursts (True) and silences (False) of the given lengths; returns the wave and the silences."""
    parts, silences, pos = [], [], 0
    rng = np.random.default_rng(1)
    for seconds, loud in pattern:
        n = int(seconds * rate)
        parts.append(
            0.3 * np.sin(np.arange(n) * 0.07) + 0.01 * rng.standard_normal(n) if loud else 0.001 * rng.standard_normal(n)
        )
        if not loud:
            silences.append((pos, pos + n))
        pos += n
    return torch.tensor(np.concatenate(parts), dtype=torch.float32), silences


def _assert_covers(spans, n):
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_segmenter_cuts_in_silences_and_covers_everything():
    wave, silences = _bursts(
        [(7.3, True), (0.6, False), (5.1, True), (0.4, False), (9.0, True), (1.0, False), (12.0, True), (0.5, False), (3.0, True)]
    )
    spans = split_on_silence(wave, 16000, max_seconds=20.0)
    _assert_covers(spans, wave.shape[0])
    assert all(e - s <= 20 * 16000 for s, e in spans) and len(spans) >= 2
    for _, cut in spans[:-1]:
        assert any(a < cut < b for a, b in silences), cut / 16000


def test_long_pauses_are_left_out():
    rate = 16000
    wave, silences = _bursts([(3.0, True), (2.0, False), (2.5, True), (0.5, False), (1.0, True), (1.5, False)])
    wave[silences[0][0] : silences[0][1]] = 0.0  # digital silence
    regions = speech_regions(wave, rate, min_pause=1.0, pad=0.1)
    (g0, g1), q0 = silences[0], silences[2][0]
    # the 2 s and the final 1.5 s pauses go (0.1 s kept on the speech side), the 0.5 s one stays
    assert regions == [(0, g0 + 1600), (g1 - 1600, q0 + 1600)]
    assert speech_regions(torch.zeros(3 * rate), rate) == []  # nothing but silence: nothing to recognize
    loud = _bursts([(4.0, True)])[0]
    assert speech_regions(loud, rate) == [(0, loud.shape[0])]
    # a pause in a noisy room (noise 35 dB under the speech, above -55 dBFS) is not taken for silence
    noisy, _ = _bursts([(3.0, True), (2.0, False), (3.0, True)])
    noisy += 0.006 * torch.randn(noisy.shape[0])
    assert speech_regions(noisy, rate) == [(0, noisy.shape[0])]
    # chunks: the regions, each cut to at most max_seconds
    long_wave, long_sil = _bursts([(25.0, True), (3.0, False), (12.0, True)])
    chunks = speech_chunks(long_wave, rate, max_seconds=20.0)
    assert len(chunks) == 3 and all(e - s <= 20 * rate for s, e in chunks)
    assert chunks[1][1] <= long_sil[0][0] + 1600 and chunks[2][0] >= long_sil[0][1] - 1600


def test_segmenter_limits():
    rate = 16000
    short = torch.randn(int(19.9 * rate))
    assert split_on_silence(short, rate) == [(0, short.shape[0])]
    noise = torch.randn(int(61.3 * rate))  # no pauses at all: cuts still respect the limits
    spans = split_on_silence(noise, rate, max_seconds=20.0, min_seconds=1.0)
    _assert_covers(spans, noise.shape[0])
    assert all(rate <= e - s <= 20 * rate for s, e in spans)
    tail = torch.randn(int(20.2 * rate))  # the last chunk is never shorter than min_seconds
    spans = split_on_silence(tail, rate, max_seconds=20.0, min_seconds=1.0)
    _assert_covers(spans, tail.shape[0])
    assert spans[-1][1] - spans[-1][0] >= rate
    with pytest.raises(ValueError):
        split_on_silence(noise, rate, max_seconds=1.0, min_seconds=2.0)


# ---- writers ------------------------------------------------------------------------------------
def test_timestamps_and_cues():
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(1.2344) == "00:00:01,234"
    assert format_timestamp(3723.0456, ".") == "01:02:03.046"
    words = [Word(f"word{i:02d}", 10 + i * 0.5, 10 + i * 0.5 + 0.4) for i in range(20)]  # 6 chars each, 0.5 s apart
    hyp = Hypothesis(" ".join(w.text for w in words), words)
    t = Transcript(30.0, [Segment(0.0, 10.0, Hypothesis("")), Segment(10.0, 30.0, hyp)])
    cs = cues(t)
    assert " ".join(c.text for c in cs) == hyp.text
    assert all(len(c.text) <= 42 and c.end - c.start <= 7.0 for c in cs) and len(cs) == 4  # 6 words per 41-char cue
    assert to_srt(t).startswith("1\n00:00:10,000 --> 00:00:12,900\nword00 word01")
    assert "\n00:00:10.000 --> 00:00:12.900\n" in to_vtt(t)
    assert to_tsv(t).splitlines()[1] == "10000\t12900\tword00 word01 word02 word03 word04 word05"
    no_words = Transcript(5.0, [Segment(0.0, 5.0, Hypothesis("hello there"))])
    assert to_srt(no_words) == "1\n00:00:00,000 --> 00:00:05,000\nhello there\n\n"


def test_vad_choices_on_two_utterances_and_a_pause(wavs, tmp_path):
    """energy and silero leave the 2 s pause out (one chunk per utterance); none decodes every sample."""
    pytest.importorskip("faster_whisper")
    first, second = (read_audio(w, 16000)[0] for w in wavs[:2])
    wave = torch.cat([first, torch.zeros(2 * 16000), second])
    gap = (first.shape[0], first.shape[0] + 2 * 16000)
    for vad in ("energy", "silero"):
        chunks = speech_chunks(wave, 16000, vad=vad)
        assert len(chunks) == 2, (vad, chunks)
        assert chunks[0][1] <= gap[0] + 0.45 * 16000 and chunks[1][0] >= gap[1] - 0.45 * 16000, (vad, chunks)
    assert speech_chunks(wave, 16000, vad="none") == [(0, wave.shape[0])]
    assert len(speech_chunks(wave, 16000, vad="silero", min_pause=3.0)) == 1  # a 2 s pause is no pause at 3 s
    with pytest.raises(ValueError, match="unknown vad"):
        speech_chunks(wave, 16000, vad="loud")


def test_vad_option_of_the_command(model_dir, wavs, tmp_path):
    out = tmp_path / "out"
    assert main(["transcribe", "--model", str(model_dir), "-o", str(out), "-f", "json", "-q", "--vad", "none", wavs[0]]) == 0
    doc = json.loads((out / f"{Path(wavs[0]).stem}.json").read_text())
    assert doc["segments"][0]["start"] == 0.0 and doc["segments"][-1]["end"] == pytest.approx(doc["duration"], abs=1e-3)
