"""Transcribe audio files: inputs -> chunks -> batched recognizer -> one stitched transcript per file.

    collect_inputs        files, directories (recursively) and Kaldi wav.scp files -> named sources
    load_recognizer       a model dir -> a Recognizer (stage-1 CIF model, or an exported speech LLM)
    transcribe_inputs     read each source at the recognizer's rate, drop long pauses, cut it at quiet points
                          (asr.decoding.segmenter), run the chunks of several files together in
                          batches sorted by length, and yield each file's Transcript (or its AudioError)

A stage-1 model dir (``exp/<tag>/final``) holds the weights, the tokenizer and ``feat_info.json``,
which names the feature extractor to rebuild (Kaldi fbank or a frozen Whisper encoder); features are
computed on the fly. A dir with ``export.json`` of kind ``speech_llm`` is an exported X-LLM model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from asr.data.audio import AUDIO_EXTENSIONS, AudioError, read_audio
from asr.data.datadir import read_table
from asr.decoding.cif_greedy import load_recognizer as load_cif_model
from asr.decoding.hypothesis import Hypothesis, Recognizer, words_from_pieces
from asr.decoding.segmenter import speech_chunks
from asr.decoding.writers import Segment, Transcript
from asr.features.extractors import build_extractor
from asr.pretrained import resolve_model
from asr.training.data import pad_features

POOL_BATCHES = 8  # chunks of this many batches (at least) are pooled, sorted by length and decoded together


# ---- inputs -------------------------------------------------------------------------------------
@dataclass
class AudioInput:
    name: str  # output name: file stem, path below an input dir without the extension, or wav.scp key
    source: str  # a path or a ``cmd |`` pipe (read_audio)


def _is_wav_scp(arg: str) -> bool:
    return arg.endswith("wav.scp") and Path(arg).is_file()


def collect_inputs(args: list[str], wav_scp: str | None = None) -> list[AudioInput]:
    """Expand command-line inputs. Raises ValueError for an empty directory or clashing output names."""
    inputs: list[AudioInput] = []
    for arg in args + ([wav_scp] if wav_scp else []):
        path = Path(arg)
        if arg == wav_scp or _is_wav_scp(arg):
            inputs += [AudioInput(utt, src) for utt, src in read_table(path, check_sorted=False).items()]
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file())
            if not found:
                raise ValueError(f"{arg}: no audio files ({' '.join(AUDIO_EXTENSIONS)}) below this directory")
            inputs += [AudioInput(p.relative_to(path).with_suffix("").as_posix(), str(p)) for p in found]
        else:
            inputs.append(AudioInput(path.stem, arg))
    seen: dict[str, str] = {}
    for item in inputs:
        if seen.setdefault(item.name, item.source) != item.source:
            raise ValueError(f"{seen[item.name]} and {item.source} would both be written as {item.name}.*")
    return inputs


# ---- recognizers --------------------------------------------------------------------------------
def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_recognizer(model_dir: str | Path | None = None, device: str = "cpu", beam_size: int | None = None,
                    cif_weight: float | None = None, image: str | Path | None = None,
                    picture_guidance: float | None = None) -> Recognizer:
    """The recognizer a model dir describes (None: the shipped default model; a hub id is downloaded,
    see :func:`asr.pretrained.resolve_model`). ``beam_size`` and ``cif_weight`` apply to the speech LLM
    (CIF is greedy); left None, they are the export's defaults (``export.json`` "decode").
    ``image``: a picture shown with all the audio (stage-3 exports only); ``picture_guidance``: with it,
    greedy decoding that amplifies the picture's effect (default 0: plain decoding)."""
    model_dir, device = resolve_model(model_dir), resolve_device(device)
    export = model_dir / "export.json"
    doc = json.loads(export.read_text()) if export.exists() else {"kind": "cif"}
    if doc.get("kind") not in ("cif", "speech_llm", "multimodal"):
        raise ValueError(f"{export}: unknown kind {doc.get('kind')!r} (expected 'cif', 'speech_llm' or 'multimodal')")
    if doc["kind"] != "cif":
        if image is not None and doc["kind"] != "multimodal":
            raise ValueError(f"{model_dir} is a speech-only model: --image needs a stage-3 (multimodal) export")
        from asr.decoding.llm_recognizer import SpeechLlmRecognizer

        defaults = doc.get("decode") or {}
        return SpeechLlmRecognizer.from_export_dir(
            model_dir, device=device, beam_size=beam_size if beam_size is not None else defaults.get("beam_size", 1),
            cif_weight=cif_weight if cif_weight is not None else defaults.get("cif_weight", 0.0), image=image,
            picture_guidance=picture_guidance or 0.0)
    if image is not None:
        raise ValueError(f"{model_dir} is a stage-1 CIF model: --image needs a stage-3 (multimodal) export")
    return CifRecognizer(model_dir, device=device)


def cif_token_times(alphas: torch.Tensor, fire_frames: list[int], frame_seconds: float,
                    min_alpha: float = 0.05) -> tuple[list[float], list[float]]:
    """Start and end time (seconds) of each CIF token.

    alphas (T',): the CIF weight of each encoder frame; fire_frames: the frame each token fired on
    (non-decreasing). A token ends at the end of its fire frame, ``(f + 1) * frame_seconds``, and
    starts at the first frame after the previous token's fire frame (frame 0 for the first token)
    whose weight exceeds ``min_alpha`` (else on its own fire frame): after a pause, where the
    weights are ~0, the next token starts where speech resumes, not where the previous token ended.
    """
    starts, ends, prev = [], [], -1
    for f in fire_frames:
        weighted = torch.nonzero(alphas[prev + 1 : f + 1] > min_alpha)
        first = prev + 1 + int(weighted[0, 0]) if len(weighted) else f
        starts.append(round(first * frame_seconds, 3))
        ends.append(round((f + 1) * frame_seconds, 3))
        prev = f
    return starts, ends


MIN_SECONDS = 0.2  # shorter waves are padded with zeros (the encoder's convolutions need a few frames)


def wave_features(extractor, waves: list[torch.Tensor], sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """16 kHz mono waves (N_i,) -> padded features (B, T_max, F) and lengths (B,).

    Features are extracted per wave (an extractor takes one wave); waves shorter than MIN_SECONDS
    get trailing zeros first.
    """
    min_len = int(MIN_SECONDS * sample_rate)
    return pad_features([extractor(torch.nn.functional.pad(w, (0, max(0, min_len - w.shape[0])))) for w in waves])


def timed_cif_hypothesis(units, tokens: list[int], fire_frames: list[int], alphas: torch.Tensor,
                         frame_seconds: float, duration: float, probs: list[float] | None = None) -> Hypothesis:
    """A CIF result of one wave -> Hypothesis with token and word times clipped to ``duration``.

    alphas (T',): the CIF weights of the wave's own frames; probs: each token's probability.
    """
    starts, ends = cif_token_times(alphas, fire_frames, frame_seconds)
    ends = [min(e, round(duration, 3)) for e in ends]
    starts = [min(s, e) for s, e in zip(starts, ends)]
    pieces = units.pieces(tokens)
    words = words_from_pieces(pieces, starts, ends, marker=units.word_marker, probs=probs)
    return Hypothesis(units.decode(tokens), words, pieces, ends, starts, list(probs or []))


class CifRecognizer:
    """A stage-1 model dir as a :class:`~asr.decoding.hypothesis.Recognizer` (greedy CIF decoding)."""

    sample_rate = 16000

    def __init__(self, model_dir: str | Path, device: str = "cpu"):
        self.model, self.tokenizer, feat_info = load_cif_model(model_dir)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.extractor = build_extractor(feat_info["feature_type"], feat_info.get("options") or {})
        # seconds per encoder frame seen by CIF
        self.frame_seconds = self.model.frame_rate_divisor / feat_info["frame_rate_hz"]

    @torch.inference_mode()
    def __call__(self, waves: list[torch.Tensor]) -> list[Hypothesis]:
        """waves: 16 kHz mono (N_i,) -> one hypothesis each, times in seconds from the wave's start.

        The model runs on the padded batch (B, T_max, F); times are clipped to each wave's duration.
        """
        feats, lengths = wave_features(self.extractor, waves, self.sample_rate)  # (B, T_max, F), (B,)
        result = self.model.recognize(feats.to(self.device), lengths.to(self.device))
        alphas = result["alphas"].float().cpu()  # (B, T')
        logits = result["logits"]
        probs = logits.float().softmax(-1).amax(-1).cpu() if logits is not None else None  # (B, N)
        return [timed_cif_hypothesis(self.tokenizer, result["tokens"][b], result["fire_frames"][b],
                                     alphas[b, : result["frame_lengths"][b]], self.frame_seconds,
                                     wave.shape[0] / self.sample_rate,
                                     [round(p, 4) for p in probs[b, : len(result["tokens"][b])].tolist()] if probs is not None else None)
                for b, wave in enumerate(waves)]


# ---- files -> chunks -> batches -> transcripts --------------------------------------------------
@dataclass
class _Pending:
    item: AudioInput
    wave: torch.Tensor  # (N,) at the recognizer's rate
    spans: list[tuple[int, int]]  # chunk boundaries in samples (speech_chunks: long pauses left out)


def _decode_pool(recognizer: Recognizer, pool: list[_Pending], batch_size: int, progress) -> Iterator[tuple[AudioInput, Transcript]]:
    """Recognize all chunks of ``pool`` in batches of similar length, then stitch each file back together."""
    lengths = {(i, j): e - s for i, p in enumerate(pool) for j, (s, e) in enumerate(p.spans)}
    chunks = sorted(lengths, key=lengths.get, reverse=True)  # (file, chunk) keys, longest first
    hyps: dict[tuple[int, int], Hypothesis] = {}
    for k in range(0, len(chunks), batch_size):
        batch = chunks[k : k + batch_size]
        waves = [pool[i].wave[slice(*pool[i].spans[j])] for i, j in batch]  # (N_c,) each
        hyps.update(zip(batch, recognizer(waves)))
        if progress is not None:
            progress.update(len(batch))
    rate = recognizer.sample_rate
    for i, p in enumerate(pool):
        segments = [Segment(round(s / rate, 3), round(e / rate, 3), hyps[i, j].shifted(s / rate))
                    for j, (s, e) in enumerate(p.spans)]
        yield p.item, Transcript(p.wave.shape[0] / rate, segments)


def transcribe_wave(recognizer: Recognizer, wave: torch.Tensor, batch_size: int = 8,
                    chunk_seconds: float = 20.0, vad: str = "energy", min_pause: float = 1.0) -> Transcript:
    """One waveform (N,) at the recognizer's rate -> its Transcript (chunked as files are)."""
    item = AudioInput("audio", "<waveform>")
    pending = _Pending(item, wave, speech_chunks(wave, recognizer.sample_rate, chunk_seconds, min_pause=min_pause, vad=vad))
    return next(_decode_pool(recognizer, [pending], batch_size, None))[1]


def transcribe_inputs(recognizer: Recognizer, inputs: list[AudioInput], batch_size: int = 8,
                      chunk_seconds: float = 20.0, progress=None, vad: str = "energy",
                      min_pause: float = 1.0) -> Iterator[tuple[AudioInput, Transcript | AudioError]]:
    """Yield ``(input, Transcript)`` for each input, or ``(input, AudioError)`` when it cannot be read.

    Files are read one after the other and cut into chunks of at most ``chunk_seconds``; once
    ``POOL_BATCHES * batch_size`` chunks are pooled (and at the end) they are decoded together, so
    memory holds about that many chunks' audio plus the file being read. ``progress`` (a tqdm bar,
    optional) counts chunks; its total grows as files are read. ``vad`` (energy | silero | none) and
    ``min_pause``: which pauses are left out (:func:`asr.decoding.segmenter.speech_chunks`).
    """
    pool: list[_Pending] = []
    for item in inputs:
        try:
            wave, rate = read_audio(item.source, recognizer.sample_rate)
        except AudioError as exc:
            yield item, exc
            continue
        pool.append(_Pending(item, wave, speech_chunks(wave, rate, chunk_seconds, min_pause=min_pause, vad=vad)))
        if progress is not None:
            progress.total += len(pool[-1].spans)
            progress.refresh()
        if sum(len(p.spans) for p in pool) >= POOL_BATCHES * batch_size:
            yield from _decode_pool(recognizer, pool, batch_size, progress)
            pool = []
    yield from _decode_pool(recognizer, pool, batch_size, progress)
