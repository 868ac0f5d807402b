"""Speed and CIF-compression benchmarks: ``python -m bench.run --out bench/out``.

Measured on real wavs (a Kaldi data dir's wav.scp, N utterances spread over it; pocketsphinx's test
wavs when the data dir is absent), single process, with torch's thread count reported:

1. feature extraction speed (x real time = audio seconds / wall seconds): Kaldi fbank and the
   frozen Whisper encoder (sliced forward, no 30 s padding), as ``asr make-feats`` computes them;
2. stage-1 training throughput (utterances/s, feature frames/s) for each experiment config:
   forward + backward + clipping + AdamW step on batches made as ``asr train`` makes them
   (``FeatureDataset`` + ``FrameBatchSampler`` with the config's ``max_frames_per_batch``), from
   the features of step 1 held in memory; weights are randomly initialized;
3. CIF decoding real-time factor (decode seconds / audio seconds) of ``CifAsrModel.recognize``,
   batched (the config's ``decode.batch_frames``) and one utterance at a time, on cached
   features, and end to end (log-mel + frozen Whisper encoder + recognize) for Whisper configs;
4. CIF compression of a trained model dir: CIF vectors per second of audio against the encoder
   frames CIF integrates over and the frozen encoder's native frames, and how often the CIF token
   count equals the reference token count. Without a trained model these rows read
   "n/a (no trained model)".

Writes ``OUT/bench.json`` and ``OUT/bench.md`` (atomically). Timings use ``time.perf_counter``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from asr.config import load_config
from asr.data.audio import AudioError, read_audio, utterance_audio
from asr.data.batching import pad_features
from asr.data.datadir import DataDir, read_table
from asr.features.extractors import build_extractor
from asr.io_utils import write_table, write_text_atomic
from asr.tokenizer import Tokenizer, load_tokenizer, train_tokenizer

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "mini"
DEFAULT_DATA_DIR = RECIPE / "data" / "test_unseen"
DEFAULT_CONFIGS = [RECIPE / "conf" / "tuning" / "cformer_whisper_quick.yaml", RECIPE / "conf" / "cformer_conformer.yaml"]
POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
NO_MODEL = "n/a (no trained model)"
NO_TEXT = "n/a (no reference text)"
SAMPLE_RATE = 16000
MIN_SECONDS = 0.1  # shorter audio is skipped (Whisper's log-mel needs 400 samples)
SCHEMA = "xllm-asr-bench/1"


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
@dataclass
class BenchUtt:
    utt_id: str
    wave: torch.Tensor  # (num_samples,) float32 at 16 kHz
    text: str | None

    @property
    def seconds(self) -> float:
        return self.wave.shape[0] / SAMPLE_RATE


def spread(items: list, n: int) -> list:
    """``n`` items evenly spaced over ``items`` (all of them when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def _sphinx_transcription(path: Path) -> dict[str, str]:
    """``<s> words </s> (id)`` lines -> {id: words}."""
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
        if m:
            out[m.group(2).strip()] = " ".join(m.group(1).lower().split())
    return out


def _pocketsphinx_entries(root: Path) -> list[tuple[str, str, str | None]]:
    texts: dict[Path, str] = {}
    for trans in list(root.glob("*/transcription")) + list(root.glob("*/*.transcription")):
        for key, words in _sphinx_transcription(trans).items():
            texts[trans.parent / f"{key}.wav"] = words
    return [(f"{wav.parent.name}-{wav.stem}", str(wav), texts.get(wav)) for wav in sorted(root.glob("*/*.wav"))]


def load_utterances(data_dir: Path | None, num_utts: int) -> tuple[list[BenchUtt], str]:
    """Read the audio of up to ``num_utts`` utterances into memory. Returns (utterances, source)."""
    if data_dir is not None and (data_dir / "wav.scp").is_file():
        data = DataDir(data_dir, wav_scp=read_table(data_dir / "wav.scp"))
        if (data_dir / "text").is_file():
            data.text = read_table(data_dir / "text", allow_empty_value=True)
        if (data_dir / "segments").is_file():
            data.segments = {}
            for utt, value in read_table(data_dir / "segments").items():
                rec, start, end = value.split()
                data.segments[utt] = (rec, float(start), float(end))
        ids = list(data.segments if data.segments is not None else data.wav_scp)
        source = str(data_dir)
        readers = [(u, lambda u=u, cache={}: utterance_audio(data, u, cache), data.text.get(u)) for u in spread(ids, num_utts)]
    else:
        if not POCKETSPHINX_DATA.is_dir():
            raise SystemExit(f"no audio to benchmark on: {data_dir} has no wav.scp and {POCKETSPHINX_DATA} is missing")
        log.warning("%s has no wav.scp: using the wavs of %s", data_dir, POCKETSPHINX_DATA)
        entries = spread(_pocketsphinx_entries(POCKETSPHINX_DATA), num_utts)
        source = str(POCKETSPHINX_DATA)
        readers = [(u, lambda p=p: read_audio(p)[0], t) for u, p, t in entries]
    utts = []
    for utt, read, text in readers:
        try:
            wave = read().float().contiguous()
        except (AudioError, RuntimeError, ValueError) as exc:
            log.warning("skipped %s: %s", utt, exc)
            continue
        if wave.shape[0] < MIN_SECONDS * SAMPLE_RATE:
            log.warning("skipped %s: shorter than %.1f s", utt, MIN_SECONDS)
            continue
        utts.append(BenchUtt(utt, wave, text or None))
    if not utts:
        raise SystemExit(f"no readable audio in {source}")
    return utts, source


def cpu_busy_share(seconds: float = 0.5) -> float | None:
    """Share of all CPUs busy (any process) over ``seconds``, from /proc/stat; None where unreadable."""

    def sample():
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields[:8])  # idle + iowait, total (without guest time)

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1.0 - (idle1 - idle0) / max(total1 - total0, 1), 3)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "cpu_busy_before_start": cpu_busy_share(),
    }


# ------------------------------------------------------------------------------------------------
# 1. features
# ------------------------------------------------------------------------------------------------
class FeatureBank:
    """Extractors and in-memory features per (type, options); times the first pass of each type."""

    def __init__(self, utts: list[BenchUtt]):
        self.utts = utts
        self._extractors: dict[tuple, object] = {}
        self._feats: dict[tuple, dict[str, np.ndarray]] = {}
        self.speed: dict[str, dict] = {}

    @staticmethod
    def _key(ftype: str, options: dict | None) -> tuple:
        return ftype, json.dumps(options or {}, sort_keys=True)

    def extractor(self, ftype: str, options: dict | None):
        key = self._key(ftype, options)
        if key not in self._extractors:
            log.info("loading the %s extractor %s", ftype, options or {})
            self._extractors[key] = build_extractor(ftype, options)
        return self._extractors[key]

    def features(self, ftype: str, options: dict | None) -> dict[str, np.ndarray]:
        key = self._key(ftype, options)
        if key in self._feats:
            return self._feats[key]
        ext = self.extractor(ftype, options)
        feats: dict[str, np.ndarray] = {}
        with torch.inference_mode():
            ext(self.utts[0].wave)  # warm-up (first-call allocations, lazy init)
            start = time.perf_counter()
            for u in self.utts:
                try:
                    feats[u.utt_id] = ext(u.wave)
                except (RuntimeError, ValueError) as exc:
                    log.warning("%s features of %s failed: %s", ftype, u.utt_id, exc)
            wall = time.perf_counter() - start
        audio = sum(u.seconds for u in self.utts)
        self._feats[key] = feats
        if ftype not in self.speed:
            frames = sum(m.shape[0] for m in feats.values())
            self.speed[ftype] = {
                "extractor": type(ext).__name__,
                "options": options or {},
                "num_utts": len(feats),
                "audio_seconds": _r(audio),
                "wall_seconds": _r(wall),
                "x_real_time": _r(audio / wall),
                "dim": int(ext.dim),
                "frame_rate_hz": float(ext.frame_rate_hz),
                "frames": int(frames),
            }
            log.info("%s: %.1f s of audio in %.2f s = %.1fx real time", ftype, audio, wall, audio / wall)
        return feats


def _r(x: float, digits: int = 4) -> float:
    """Round to ``digits`` significant digits (keeps small numbers such as RTFs readable)."""
    if x == 0 or not np.isfinite(x):
        return float(x)
    return float(f"{x:.{digits}g}")


# ------------------------------------------------------------------------------------------------
# tokenizer for the training targets
# ------------------------------------------------------------------------------------------------
def find_tokenizer(explicit: Path | None, model_dir: Path | None) -> Path | None:
    if explicit is not None:
        return explicit
    for name in ("tokenizer.model", "tokenizer.llm"):
        if model_dir is not None and (model_dir / name).exists():
            return model_dir / name
    found = sorted(
        list(RECIPE.glob("exp/*/tokenizer/units.model")) + list(RECIPE.glob("exp/*/tokenizer/units.llm")),
        key=lambda p: p.stat().st_mtime,
    )
    return found[-1] if found else None


def fallback_tokenizer(utts: list[BenchUtt], vocab_size: int, tmp: Path) -> Tokenizer:
    """A sentencepiece model trained on the benchmark's own transcripts (largest vocab that trains)."""
    texts = {u.utt_id: u.text for u in utts if u.text}
    if not texts:
        raise SystemExit("no transcripts to build training targets from: give --tokenizer and a data dir with text")
    write_table(tmp / "text", texts)
    for size in sorted({vocab_size, 256, 128, 64, 32}, reverse=True):
        if size > vocab_size:
            continue
        try:
            return Tokenizer(train_tokenizer(tmp / "text", tmp / f"tok{size}", vocab_size=size))
        except RuntimeError:
            continue
    return Tokenizer(train_tokenizer(tmp / "text", tmp / "tokchar", vocab_size=vocab_size, model_type="char"))


# ------------------------------------------------------------------------------------------------
# 2. training throughput
# ------------------------------------------------------------------------------------------------
def _write_dump(out: Path, feats: dict[str, np.ndarray], utts: list[BenchUtt], info: dict) -> Path:
    """A dump dir (feats.ark/scp, utt2num_frames, text, feat_info.json), as ``asr make-feats`` writes it."""
    import kaldiio

    out.mkdir(parents=True, exist_ok=True)
    ids = sorted((u.utt_id for u in utts if u.utt_id in feats and u.text), key=str.encode)
    with kaldiio.WriteHelper(f"ark,scp:{out}/feats.ark,{out}/feats.scp") as writer:
        for utt in ids:
            writer(utt, np.asarray(feats[utt], dtype=np.float32))
    write_table(out / "utt2num_frames", {u: str(feats[u].shape[0]) for u in ids})
    texts = {u.utt_id: u.text for u in utts if u.utt_id in ids}
    write_table(out / "text", texts)
    write_text_atomic(out / "feat_info.json", json.dumps(info) + "\n")
    return out


def bench_training(config_path: Path, bank: FeatureBank, tokenizer: Tokenizer, warmup: int, steps: int, tmp: Path):
    """Returns (result dict, the model after the steps, the config dict, the features used)."""
    from asr.data.batching import FrameBatchSampler
    from asr.training.data import FeatureDataset
    from asr.training.train_cif import build_model
    from asr.training.trainer import TrainConfig, seed_everything, warmup_inv_sqrt

    config = load_config(config_path)
    fcfg = config.get("features", {})
    ftype, options = fcfg.get("type", "fbank"), fcfg.get("options", {})
    feats = bank.features(ftype, options)
    ext = bank.extractor(ftype, options)
    train_cfg = TrainConfig.from_dict(config.get("train", {}))
    vocab = max(len(tokenizer), int(config.get("tokenizer", {}).get("vocab_size", 0)))
    info = {"feature_type": ftype, "options": options, "dim": int(ext.dim), "frame_rate_hz": float(ext.frame_rate_hz)}
    dump = _write_dump(tmp / f"dump_{config_path.stem}", feats, bank.utts, info)

    seed_everything(train_cfg.seed)
    model = build_model(config, int(ext.dim), vocab, None)
    divisor = getattr(model.encoder, "frame_rate_divisor", 1)
    dataset = FeatureDataset(dump, tokenizer, frame_divisor=divisor, preload=True)
    sampler = FrameBatchSampler(
        [u.num_frames for u in dataset.utts],
        train_cfg.max_frames_per_batch,
        shuffle=True,
        seed=train_cfg.seed,
        max_batch_size=train_cfg.max_batch_size,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_inv_sqrt(train_cfg.warmup_steps))

    def batch_stream():
        epoch = 0
        while True:
            sampler.set_epoch(epoch)
            yield from sampler.epoch_order()
            epoch += 1

    def step(indices: list[int]) -> tuple[int, int]:
        batch = dataset.collate(indices)
        optimizer.zero_grad(set_to_none=True)
        out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, train_cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        return len(indices), int(batch["feat_lengths"].sum())

    model.train()
    stream = batch_stream()
    for _ in range(warmup):
        step(next(stream))
    n_utts = n_frames = 0
    start = time.perf_counter()
    for _ in range(steps):
        u, f = step(next(stream))
        n_utts += u
        n_frames += f
    wall = time.perf_counter() - start
    rate = float(ext.frame_rate_hz)
    result = {
        "config": _rel(config_path),
        "feature_type": ftype,
        "frame_rate_hz": rate,
        "trainable_params_millions": _r(sum(p.numel() for p in params) / 1e6),
        "vocab_size": vocab,
        "max_frames_per_batch": train_cfg.max_frames_per_batch,
        "num_utts": len(dataset),
        "batches_per_epoch": len(sampler),
        "mean_batch_size": _r(n_utts / steps),
        "warmup_steps": warmup,
        "timed_steps": steps,
        "wall_seconds": _r(wall),
        "seconds_per_step": _r(wall / steps),
        "utterances_per_second": _r(n_utts / wall),
        "frames_per_second": _r(n_frames / wall),
        "audio_seconds_per_second": _r(n_frames / rate / wall),
    }
    log.info("train %s: %.2f utt/s, %.0f frames/s, %.2f s/step", config_path.stem, n_utts / wall, n_frames / wall, wall / steps)
    return result, model, config, feats


# ------------------------------------------------------------------------------------------------
# 3. decoding real-time factor
# ------------------------------------------------------------------------------------------------
def _frontend_batch(ext, waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Frozen-encoder features of a batch of waveforms: one padded, sliced encoder forward when the
    batch allows it (more than one utterance, all within Whisper's 30 s window, no pooling)."""
    from asr.features.whisper_encoder import whisper_log_mel

    mels = [whisper_log_mel(w) for w in waves]
    if len(mels) > 1 and ext.config.pool == 1 and max(m.shape[0] for m in mels) <= ext.max_frames:
        mel, lengths = pad_features(mels)
        return ext.encoder(mel, lengths)
    return pad_features([torch.from_numpy(ext(w)) for w in waves])


def bench_decoding(
    model,
    ids: list[str],
    feats: dict[str, np.ndarray],
    audio_seconds: float,
    batch_frames: int,
    frontend=None,
    waves: dict[str, torch.Tensor] | None = None,
) -> dict:
    """RTF of ``model.recognize`` batched and at batch size 1; ``frontend``: also end to end from audio."""
    from asr.data.batching import FrameBatchSampler

    model.eval()
    sampler = FrameBatchSampler([feats[u].shape[0] for u in ids], batch_frames, shuffle=False)
    layouts = {"batched": [[ids[i] for i in b] for b in sampler], "batch_size_1": [[u] for u in ids]}

    def cached(batch):
        return pad_features([torch.from_numpy(np.asarray(feats[u], dtype=np.float32)) for u in batch])

    def from_audio(batch):
        return _frontend_batch(frontend, [waves[u] for u in batch])

    def timed(make_inputs, batches) -> dict:
        with torch.inference_mode():
            model.recognize(*make_inputs(batches[0][:1]))  # warm-up
            start = time.perf_counter()
            tokens = 0
            for batch in batches:
                tokens += sum(len(t) for t in model.recognize(*make_inputs(batch))["tokens"])
            wall = time.perf_counter() - start
        return {
            "batches": len(batches),
            "mean_batch_size": _r(len(ids) / len(batches)),
            "decode_seconds": _r(wall),
            "rtf": _r(wall / audio_seconds),
            "cif_tokens": tokens,
        }

    out = {
        "num_utts": len(ids),
        "audio_seconds": _r(audio_seconds),
        "batch_frames": batch_frames,
        "cached_features": {name: timed(cached, b) for name, b in layouts.items()},
    }
    if frontend is not None:
        out["end_to_end"] = {name: timed(from_audio, b) for name, b in layouts.items()}
    return out


# ------------------------------------------------------------------------------------------------
# 4. CIF compression of a trained model
# ------------------------------------------------------------------------------------------------
def find_model_dir() -> Path | None:
    """The newest recipes/mini/exp/*/final whose features are frozen Whisper encoder outputs."""
    found = []
    for d in RECIPE.glob("exp/*/final"):
        try:
            info = json.loads((d / "feat_info.json").read_text())
        except (OSError, ValueError):
            continue
        if (
            info.get("feature_type") == "whisper_encoder"
            and _weights_file(d) is not None
            and ((d / "tokenizer.model").is_file() or (d / "tokenizer.llm").is_dir())
        ):
            found.append(d)
    return max(found, key=lambda d: _weights_file(d).stat().st_mtime) if found else None


def _weights_file(model_dir: Path) -> Path | None:
    """A stage-1 dir's weights: model.safetensors, or model.pt (dirs of old)."""
    return next((model_dir / n for n in ("model.safetensors", "model.pt") if (model_dir / n).is_file()), None)


def bench_compression(model_dir: Path, bank: FeatureBank) -> dict:
    from asr.data.batching import FrameBatchSampler
    from asr.decoding.cif_greedy import load_cif_model

    model, tokenizer, feat_info = load_cif_model(model_dir)
    ftype, options = feat_info["feature_type"], feat_info.get("options", {})
    feats = bank.features(ftype, options)
    utts = [u for u in bank.utts if u.utt_id in feats]
    ids = [u.utt_id for u in utts]
    sampler = FrameBatchSampler([feats[u].shape[0] for u in ids], 40000, shuffle=False)
    n_tokens: dict[str, int] = {}
    n_frames: dict[str, int] = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in sampler:
            names = [ids[i] for i in batch]
            result = model.recognize(*pad_features([torch.from_numpy(np.asarray(feats[u], dtype=np.float32)) for u in names]))
            for j, u in enumerate(names):
                n_tokens[u], n_frames[u] = len(result["tokens"][j]), int(result["frame_lengths"][j])
    wall = time.perf_counter() - start
    audio = sum(u.seconds for u in utts)
    pool = int(options.get("pool", 1)) if ftype == "whisper_encoder" else 1
    native = sum(feats[u].shape[0] for u in ids) * pool  # frozen encoder frames (fbank: feature frames)
    cif_total, enc_total = sum(n_tokens.values()), sum(n_frames.values())
    refs = {u.utt_id: len(tokenizer.encode(u.text)) for u in utts if u.text}
    out = {
        "model_dir": _rel(model_dir),
        "feature_type": ftype,
        "num_utts": len(ids),
        "audio_seconds": _r(audio),
        "native_frames_source": "frozen Whisper encoder output (50 Hz)"
        if ftype == "whisper_encoder"
        else f"{ftype} feature frames",
        "cif_vectors_per_second": _r(cif_total / audio),
        "encoder_frames_per_second": _r(enc_total / audio),
        "native_frames_per_second": _r(native / audio),
        "encoder_frames_per_cif_vector": _r(enc_total / max(cif_total, 1)),
        "native_frames_per_cif_vector": _r(native / max(cif_total, 1)),
        "decode_rtf_cached_batched": _r(wall / audio),
    }
    if refs:
        ref_total = sum(refs.values())
        out.update(
            {
                "num_utts_with_reference": len(refs),
                "reference_tokens_per_second": _r(ref_total / sum(u.seconds for u in utts if u.utt_id in refs)),
                "token_count_match_share": _r(sum(n_tokens[u] == n for u, n in refs.items()) / len(refs)),
                "token_count_mean_abs_diff": _r(sum(abs(n_tokens[u] - n) for u, n in refs.items()) / len(refs)),
            }
        )
    else:
        out.update({k: NO_TEXT for k in ("reference_tokens_per_second", "token_count_match_share", "token_count_mean_abs_diff")})
    log.info(
        "compression: %.2f CIF vectors/s vs %.1f encoder frames/s (%.1f native); count match %s",
        cif_total / audio,
        enc_total / audio,
        native / audio,
        out["token_count_match_share"],
    )
    return out


COMPRESSION_FIELDS = [
    "cif_vectors_per_second",
    "encoder_frames_per_second",
    "native_frames_per_second",
    "encoder_frames_per_cif_vector",
    "native_frames_per_cif_vector",
    "reference_tokens_per_second",
    "token_count_match_share",
    "token_count_mean_abs_diff",
    "decode_rtf_cached_batched",
]


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    if isinstance(value, str):
        return " ".join(value.replace("|", "\\|").split())
    if isinstance(value, int):
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def table_rows(res: dict) -> list[tuple[str, str, object, str]]:
    rows = []
    for ftype, r in res["feature_extraction"].items():
        what = {"fbank": "Kaldi fbank", "whisper_encoder": "frozen Whisper encoder (sliced)"}.get(ftype, ftype)
        rows.append(("feature extraction", f"{what}: speed", r["x_real_time"], "x real time (audio s / wall s)"))
    for tag, r in res["training"].items():
        if "error" in r:
            rows.append((f"training `{tag}`", "error", r["error"], ""))
            continue
        rate = f"{r['frame_rate_hz']:g} Hz {r['feature_type']}"
        rows += [
            (f"training `{tag}`", "throughput", r["utterances_per_second"], "utterances/s"),
            (f"training `{tag}`", "throughput", r["frames_per_second"], f"input frames/s ({rate})"),
            (f"training `{tag}`", "throughput", r["audio_seconds_per_second"], "audio s / wall s"),
            (f"training `{tag}`", "step time", r["seconds_per_step"], f"s/step (mean batch {r['mean_batch_size']:g} utts)"),
        ]
    for tag, r in res["decoding"].items():
        for kind, label in (
            ("cached_features", "model on cached features"),
            ("end_to_end", "end to end (log-mel + Whisper encoder + model)"),
        ):
            for layout, name in (("batched", "batched"), ("batch_size_1", "batch size 1")):
                if kind in r:
                    d = r[kind][layout]
                    rows.append((f"CIF decoding `{tag}`", f"{label}, {name}", d["rtf"], "RTF (decode s / audio s)"))
    c = res["cif_compression"]
    units = {
        "cif_vectors_per_second": "CIF vectors / s of audio",
        "encoder_frames_per_second": "frames CIF integrates over / s of audio",
        "native_frames_per_second": "frozen-encoder native frames / s of audio",
        "encoder_frames_per_cif_vector": "ratio (encoder frames per CIF vector)",
        "native_frames_per_cif_vector": "ratio (native frames per CIF vector)",
        "reference_tokens_per_second": "reference tokens / s of audio",
        "token_count_match_share": "share of utts (CIF count == reference count)",
        "token_count_mean_abs_diff": "tokens per utterance (mean abs(CIF - reference))",
        "decode_rtf_cached_batched": "RTF (decode s / audio s), trained model",
    }
    for key in COMPRESSION_FIELDS:
        rows.append(("CIF compression", key.replace("_", " "), c.get(key, NO_MODEL), units[key]))
    return rows


def render_markdown(res: dict) -> str:
    m, i = res["machine"], res["inputs"]
    lines = [
        "# xllm-asr bench",
        "",
        f"- date: {res['date']}",
        f"- machine: {m['cpu_model']}, {m['cpu_cores']} cores, torch {m['torch_version']}, torch threads {m['torch_threads']}, "
        f"single process; load average {m['load_average_start']} at start, {m['load_average_end']} at end",
        f"- audio: {i['num_utts']} utterances, {i['audio_seconds']:.1f} s (mean {i['mean_utt_seconds']:.2f} s) from `{i['source']}`",
        f"- training and decoding rows: randomly initialized weights ({res['settings']['warmup_steps']} warm-up + "
        f"{res['settings']['train_steps']} timed training steps); CIF compression: "
        f"{'`' + res['cif_compression']['model_dir'] + '`' if 'model_dir' in res['cif_compression'] else NO_MODEL}",
        f"- total bench wall time: {res['bench_wall_seconds']:.0f} s",
    ]
    busy = m.get("cpu_busy_before_start")
    if busy is not None and busy > 0.25:
        lines.append(
            f"- **warning**: {busy:.0%} of the CPUs were busy with other work just before the bench started: "
            "the timings below are not representative of an idle machine"
        )
    lines += [
        "",
        "| section | metric | value | unit |",
        "|---|---|---:|---|",
    ]
    lines += [f"| {s} | {k} | {_fmt(v)} | {u} |" for s, k, v, u in table_rows(res)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--out", type=Path, default=REPO / "bench" / "out", help="output dir for bench.json and bench.md (default: %(default)s)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="Kaldi data dir whose wav.scp (and text) to use; pocketsphinx's test wavs when absent (default: %(default)s)",
    )
    p.add_argument(
        "--num-utts", type=int, default=50, help="utterances to use, spread over the data dir (default: %(default)s; 0 = all)"
    )
    p.add_argument(
        "--configs",
        type=Path,
        nargs="+",
        default=DEFAULT_CONFIGS,
        help="experiment configs to train/decode (default: the recipe's two)",
    )
    p.add_argument("--train-steps", type=int, default=10, help="timed training steps per config (default: %(default)s)")
    p.add_argument("--warmup-steps", type=int, default=2, help="untimed training steps first (default: %(default)s)")
    p.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="trained model dir for the CIF compression rows (default: newest recipes/mini/exp/*/final with whisper_encoder features)",
    )
    p.add_argument("--no-model", action="store_true", help="skip the CIF compression rows (n/a) even if a trained model exists")
    p.add_argument(
        "--tokenizer",
        type=Path,
        default=None,
        help="sentencepiece model for training targets (default: the model dir's, else the newest recipe tokenizer, else one trained on the audio's text)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: 0 = torch's default)")
    args = p.parse_args(argv)
    if args.train_steps < 1 or args.warmup_steps < 0:
        p.error("--train-steps must be >= 1 and --warmup-steps >= 0")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    machine = machine_info()
    model_dir = None if args.no_model else (args.model_dir or find_model_dir())
    if model_dir is not None and _weights_file(model_dir) is None:
        raise SystemExit(f"--model-dir {model_dir}: no model.safetensors or model.pt")

    utts, source = load_utterances(args.data_dir, args.num_utts)
    audio = sum(u.seconds for u in utts)
    log.info("%d utterances, %.1f s of audio from %s; torch threads %d", len(utts), audio, source, torch.get_num_threads())
    bank = FeatureBank(utts)
    # 1. extraction speed of both feature types (fbank first: it is cheap)
    for ftype, options in (("fbank", None), ("whisper_encoder", None)):
        for cfg in args.configs:
            f = load_config(cfg).get("features", {})
            if f.get("type", "fbank") == ftype:
                options = f.get("options", {})
                break
        bank.features(ftype, options)

    training, decoding = {}, {}
    with tempfile.TemporaryDirectory(prefix="xllm-bench-") as tmp:
        tmp = Path(tmp)
        tok_path = find_tokenizer(args.tokenizer, model_dir)
        if tok_path is not None:
            tokenizer = load_tokenizer(tok_path)
        else:
            sizes = [int(load_config(c).get("tokenizer", {}).get("vocab_size", 300)) for c in args.configs]
            tokenizer = fallback_tokenizer(utts, max(sizes), tmp)
        for cfg in args.configs:
            tag = cfg.stem
            # 2. training throughput
            config = load_config(cfg)
            ftype = config.get("features", {}).get("type", "fbank")
            options = config.get("features", {}).get("options", {})
            try:
                training[tag], model, _, feats = bench_training(cfg, bank, tokenizer, args.warmup_steps, args.train_steps, tmp)
            except ValueError as exc:  # e.g. no utterance usable for training (more tokens than CIF frames)
                log.error("training bench of %s failed: %s", tag, exc)
                training[tag] = {"config": _rel(cfg), "error": str(exc)}
                from asr.training.train_cif import build_model

                feats, ext = bank.features(ftype, options), bank.extractor(ftype, options)
                vocab = max(len(tokenizer), int(config.get("tokenizer", {}).get("vocab_size", 0)))
                model = build_model(config, int(ext.dim), vocab, None)
            # 3. decoding RTF (the same model, in eval mode)
            ids = [u.utt_id for u in utts if u.utt_id in feats]
            frontend = bank.extractor(ftype, options) if ftype == "whisper_encoder" else None
            decoding[tag] = bench_decoding(
                model,
                ids,
                feats,
                sum(u.seconds for u in utts if u.utt_id in feats),
                int(config.get("decode", {}).get("batch_frames", 40000)),
                frontend,
                {u.utt_id: u.wave for u in utts},
            )
            d = decoding[tag]["cached_features"]
            log.info(
                "decode %s: RTF %.4f batched, %.4f at batch size 1 (cached features)",
                tag,
                d["batched"]["rtf"],
                d["batch_size_1"]["rtf"],
            )
            del model
    # 4. CIF compression of a trained model
    compression = (
        bench_compression(model_dir, bank)
        if model_dir is not None
        else {"status": NO_MODEL, **{key: NO_MODEL for key in COMPRESSION_FIELDS}}
    )

    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    res = {
        "schema": SCHEMA,
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine,
        "settings": {
            "num_utts": args.num_utts,
            "train_steps": args.train_steps,
            "warmup_steps": args.warmup_steps,
            "configs": [_rel(c) for c in args.configs],
            "tokenizer": _rel(tok_path) if tok_path else "trained on the audio's text",
        },
        "inputs": {
            "source": _rel(Path(source)),
            "num_utts": len(utts),
            "audio_seconds": _r(audio),
            "mean_utt_seconds": _r(audio / len(utts)),
            "utt_ids": [u.utt_id for u in utts],
        },
        "feature_extraction": bank.speed,
        "training": training,
        "decoding": decoding,
        "cif_compression": compression,
        "bench_wall_seconds": _r(time.perf_counter() - t_start),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out / "bench.json", json.dumps(res, indent=2) + "\n")
    write_text_atomic(args.out / "bench.md", render_markdown(res))
    log.info("wrote %s and %s", args.out / "bench.json", args.out / "bench.md")
    return res


if __name__ == "__main__":
    main()
    sys.exit(0)
