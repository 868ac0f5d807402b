#!/usr/bin/env python3
"""Stage 0 of recipes/mini_vis: an image-grounded speech corpus, as Kaldi data dirs plus images.

    python local/make_corpus.py --config conf/corpus_quick.yaml --data data --nj 2

Each utterance is a sentence describing a rendered scene (:mod:`scenes`: coloured objects with
counts and positions), spoken by one of mini's TTS voices (``recipes/mini/local/voices.py``).
Sentences are synthesized **word by word** (a content word alone, a run of function words
together), the engine's leading/trailing silence trimmed, the pieces joined with random gaps, and
the whole utterance speed-perturbed (resampling, which also shifts the pitch). That gives the exact
time span of every content word, which the masked condition needs.

Writes under ``<data>``:

* ``train``, ``dev``: clean speech; ``train`` also holds extra noisy copies ``<utt>-snrN`` and
  masked copies ``<utt>-mask`` of a configurable share of its utterances (stage 3 must learn to
  use the picture when the speech is damaged).
* ``test_clean``, ``test_10db``, ``test_5db``, ``test_0db``, ``test_masked``: the same test
  utterances under each condition (ids ``<utt>``, ``<utt>-snr10``, ``<utt>-snr5``, ``<utt>-snr0``,
  ``<utt>-mask``). Noise is white or babble (other test utterances), mixed at the set SNR over the
  whole utterance (:func:`augment.add_noise`). Masking replaces the audio of 1-2 content words
  (count, colour, shape, position or relation word: what the picture disambiguates) by a noise
  burst as loud as the speech.
* every data dir: ``wav.scp text utt2spk spk2utt utt2dur`` (validated), ``utt2image`` (utt ->
  absolute PNG path), ``word_spans`` (utt -> ``start:end`` in seconds per transcript word; a run of
  function words shares one span); test dirs also ``utt2image_mismatch`` (another test scene's
  picture, whose description differs: the control for "does the picture help?"); masked
  utterances ``masked_words`` (utt -> 0-based indices of the masked transcript words).
* ``captions`` and ``captions_dev``: the image stage's data, ``images.scp`` (caption id -> PNG) and
  ``text`` (caption id -> canonical description, :func:`scenes.caption`).
* ``images/<set>/<scene>.png``; ``local/corpus/``: ``scenes.jsonl`` (every scene: groups and
  object boxes), plans (``<set>.plan.tsv``), ``failed.tsv``, ``summary.json``.

Resumable and atomic like mini's corpus maker: a wav (or PNG) that exists and whose plan entry did
not change is not made again; a changed one is removed first; every file goes to a temp name and is
renamed. Deterministic given the seed (the piper voice aside, whose ONNX model samples noise).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
MINI_LOCAL = HERE.parents[1] / "mini" / "local"
sys.path.insert(0, str(HERE))
try:
    import asr  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parents[2]))

import numpy as np  # noqa: E402
import scenes as SC  # noqa: E402
import soundfile as sf  # noqa: E402
import yaml  # noqa: E402

from asr.data.audio import write_wav  # noqa: E402
from asr.data.datadir import DataDir, validate_data_dir  # noqa: E402
from asr.io_utils import write_table, write_text_atomic  # noqa: E402


def _load_by_path(name: str, path: Path):
    """Import one of mini's local modules by its file path (mini's files are not edited here)."""
    if not path.is_file():
        raise SystemExit(f"{path} is missing: recipes/mini_vis reuses recipes/mini/local/{path.name}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


V = _load_by_path("mini_voices", MINI_LOCAL / "voices.py")
CJ = _load_by_path("mini_corpus_jobs", MINI_LOCAL / "corpus_jobs.py")
stable_int, short_hash, write_if_changed = CJ.stable_int, CJ.short_hash, CJ.write_if_changed
A = _load_by_path("mini_augment", MINI_LOCAL / "augment.py")

log = logging.getLogger("mini_vis.make_corpus")

INDEX_OFFSET = {"train": 0, "dev": 600_000, "test": 800_000}
SNR_SETS = {"test_10db": 10, "test_5db": 5, "test_0db": 0}
TEST_SETS = ("test_clean", "test_10db", "test_5db", "test_0db", "test_masked")
ALL_SETS = ("train", "dev") + TEST_SETS
WORD_VOICE_ENGINES = ("espeak", "flite", "piper")  # festival starts in ~0.3 s: far too slow per word
DROPPED_PARAMS = ("pitch_cents", "tempo")  # sox effects of mini's voices; here speed perturbation does both


@dataclass
class Utt:
    utt: str
    spk: str
    wav: Path
    text: str
    scene_id: str
    signature: str
    kind: str  # "synth", "noisy" or "masked"
    job: dict


# ---------------------------------------------------------------- config


def load_config(path: str | Path) -> dict:
    try:
        cfg = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise SystemExit(f"{path}: cannot read the corpus config: {exc}") from None
    for key in ("voices", "train", "dev", "test"):
        if key not in cfg:
            raise SystemExit(f"{path}: missing key {key!r}")
    known = {
        "seed",
        "sample_rate",
        "image_size",
        "max_groups",
        "two_group_prob",
        "voices",
        "train",
        "dev",
        "test",
        "gap_ms",
        "edge_ms",
        "speed",
        "perturb",
        "train_augment",
        "noise",
        "masking",
        "captions",
    }
    unknown = set(cfg) - known
    if unknown:
        raise SystemExit(f"{path}: unknown keys {sorted(unknown)} (known: {sorted(known)})")
    return cfg


def parse_voices(specs: list[str], where: str) -> list:
    out = []
    for spec in specs:
        voice = V.Voice.parse(spec)
        if voice.engine not in WORD_VOICE_ENGINES:
            raise SystemExit(
                f"{where}: voice {spec}: engine {voice.engine!r} is not supported for word-by-word "
                f"synthesis (use {', '.join(WORD_VOICE_ENGINES)})"
            )
        if not V.engine_available(voice.engine):
            log.warning("%s: voice %s skipped: engine %r is not installed", where, spec, voice.engine)
            continue
        try:
            V.check_voice(voice)
        except ValueError as exc:
            raise SystemExit(f"{where}: {exc}") from None
        out.append(voice)
    if not out:
        raise SystemExit(f"{where}: no usable voice among {specs}")
    return out


# ---------------------------------------------------------------- planning


def make_scenes(cfg: dict, prefix: str, n: int, seed: int) -> list[SC.Scene]:
    size, max_groups = int(cfg.get("image_size", 96)), int(cfg.get("max_groups", 2))
    prob = float(cfg.get("two_group_prob", 0.75))
    return [
        SC.random_scene(random.Random(f"{seed}:scene:{prefix}:{i}"), f"{prefix}-{i:06d}", size, max_groups, prob)
        for i in range(n)
    ]


def chunks_of(sentence: SC.Sentence) -> list[list[int]]:
    """Word indices synthesized together: each content word alone, each run of function words as one."""
    out: list[list[int]] = []
    for i in range(len(sentence.words)):
        if i in sentence.content or not out or out[-1][-1] in sentence.content:
            out.append([i])
        else:
            out[-1].append(i)
    return out


def plan_speech(cfg: dict, set_name: str, scenes: list[SC.Scene], voices: list, data: Path, seed: int) -> list[Utt]:
    """Utterance i reads a sentence about scene i // k, voice i mod (#voices) (k = utts_per_scene)."""
    scfg = cfg[set_name]
    k = int(scfg.get("utts_per_scene", 1))
    gap, edge, speed = cfg.get("gap_ms", [40, 120]), cfg.get("edge_ms", [100, 250]), cfg.get("speed", [0.9, 1.1])
    plan = []
    for i in range(len(scenes) * k):
        scene, voice, idx = scenes[i // k], voices[i % len(voices)], INDEX_OFFSET[set_name] + i
        rnd = random.Random(f"{seed}:{set_name}:utt:{idx}")
        sent = SC.sentence(scene, rnd)
        params = {key: v for key, v in V.draw_params(voice, rnd, cfg.get("perturb")).items() if key not in DROPPED_PARAMS}
        utt = f"{voice.name}-{idx:06d}"
        wav = data / "wav" / set_name / voice.name / f"{utt}.wav"
        job = {
            "voice": voice.spec,
            "words": sent.words,
            "content": {str(k_): c for k_, c in sent.content.items()},
            "chunks": chunks_of(sent),
            "params": params,
            "gaps_s": [round(rnd.uniform(*gap) / 1000, 4) for _ in range(len(chunks_of(sent)) - 1)],
            "edges_s": [round(rnd.uniform(*edge) / 1000, 4) for _ in range(2)],
            "speed": round(rnd.uniform(*speed), 3),
            "utt": utt,
            "wav": str(wav),
        }
        sig = json.dumps({k_: v for k_, v in job.items() if k_ not in ("utt", "wav")}, sort_keys=True)
        plan.append(Utt(utt, voice.name, wav, sent.text, scene.scene_id, sig, "synth", job))
    return plan


def _masked_indices(src: Utt, rnd: random.Random, mcfg: dict) -> list[int]:
    content = sorted(int(k) for k in src.job["content"])
    lo, hi = mcfg.get("num_words", [1, 2])
    n = min(rnd.randint(int(lo), int(hi)), len(content))
    return sorted(rnd.sample(content, n))


def plan_copy(
    src: Utt, kind: str, suffix: str, cfg: dict, seed: int, babble_pool: list[Utt], rnd: random.Random, snr: float | None = None
) -> Utt:
    """A noisy (``kind`` "noisy", at ``snr``) or masked copy of a clean utterance."""
    ncfg, mcfg = cfg.get("noise") or {}, cfg.get("masking") or {}
    utt = f"{src.utt}-{suffix}"
    job: dict = {
        "utt": utt,
        "src": str(src.wav),
        "src_json": str(src.wav.with_suffix(".json")),
        "wav": str(src.wav.with_name(f"{utt}.wav")),
        "np_seed": stable_int(f"{seed}:np:{utt}"),
        "kind": kind,
    }
    if kind == "noisy":
        noise = rnd.choice(list(ncfg.get("types", ["white", "babble"])))
        talkers = []
        if noise == "babble":
            cands = [u for u in babble_pool if u.utt != src.utt]
            talkers = rnd.sample(cands, min(rnd.randint(*ncfg.get("babble_talkers", [3, 6])), len(cands)))
        job.update(noise=noise, snr_db=float(snr), babble=[str(t.wav) for t in talkers])
        extra = {"babble": {t.utt: short_hash(t.signature) for t in talkers}}
    else:
        job.update(
            masked=_masked_indices(src, rnd, mcfg),
            margin_s=float(mcfg.get("margin_ms", 20)) / 1000,
            burst_db=float(mcfg.get("burst_db", 0.0)),
        )
        extra = {}
    sig = json.dumps(
        {
            "src": short_hash(src.signature),
            **{k: v for k, v in job.items() if k not in ("utt", "wav", "src", "src_json", "babble")},
            **extra,
        },
        sort_keys=True,
    )
    return Utt(utt, src.spk, Path(job["wav"]), src.text, src.scene_id, sig, kind, job)


def plan_train_copies(cfg: dict, train: list[Utt], seed: int) -> list[Utt]:
    acfg = cfg.get("train_augment") or {}
    out = []
    pool = train[: int((cfg.get("noise") or {}).get("babble_pool", 300))]
    for src in train:
        rnd = random.Random(f"{seed}:trainaug:{src.utt}")
        if rnd.random() < float(acfg.get("noisy_fraction", 0.0)):
            snr = round(rnd.uniform(*acfg.get("snr_db", [0, 15])), 1)
            out.append(plan_copy(src, "noisy", f"snr{snr:g}".replace(".", "p").replace("-", "m"), cfg, seed, pool, rnd, snr))
        if rnd.random() < float(acfg.get("masked_fraction", 0.0)):
            out.append(plan_copy(src, "masked", "mask", cfg, seed, pool, rnd))
    return out


def plan_tests(cfg: dict, clean: list[Utt], seed: int) -> dict[str, list[Utt]]:
    plans = {"test_clean": clean}
    for name, snr in SNR_SETS.items():
        plans[name] = [
            plan_copy(u, "noisy", f"snr{snr}", cfg, seed, clean, random.Random(f"{seed}:{name}:{u.utt}"), snr) for u in clean
        ]
    plans["test_masked"] = [
        plan_copy(u, "masked", "mask", cfg, seed, clean, random.Random(f"{seed}:mask:{u.utt}")) for u in clean
    ]
    return plans


def mismatch_scene(scene_ids: list[str], scenes: dict[str, SC.Scene], seed: int) -> dict[str, str]:
    """For each scene, another scene of the list whose canonical caption differs (deterministic)."""
    out = {}
    for sid in scene_ids:
        rnd = random.Random(f"{seed}:mismatch:{sid}")
        for _ in range(100):
            other = rnd.choice(scene_ids)
            if other != sid and SC.caption(scenes[other]) != SC.caption(scenes[sid]):
                out[sid] = other
                break
        else:
            raise SystemExit(f"no mismatching scene for {sid}: the test set needs at least two different scenes")
    return out


# ---------------------------------------------------------------- workers

_TMP: Path | None = None
_RATE = 16000


def _init_worker(tmp_root: str, rate: int) -> None:
    global _TMP, _RATE
    _TMP = CJ.worker_dir(tmp_root, V.limit_threads)
    _RATE = rate


def trim(audio: np.ndarray, rate: int, threshold_db: float = -40.0, keep_ms: float = 10.0) -> np.ndarray:
    """Cut leading/trailing samples quieter than ``threshold_db`` below the peak (keeping ``keep_ms``)."""
    peak = float(np.abs(audio).max()) if len(audio) else 0.0
    if peak <= 1e-4:
        raise V.SynthesisError("silent word")
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (threshold_db / 20))
    keep = int(keep_ms * rate / 1000)
    return audio[max(0, loud[0] - keep) : loud[-1] + 1 + keep]


def synthesize_words(job: dict, tmp: Path, out_rate: int) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Speak the job's chunks one by one, join them; returns (audio at ``out_rate``, per-word (start, end) s)."""
    import torch
    import torchaudio.functional as AF

    voice = V.Voice.parse(job["voice"])
    pieces, rate = [], None
    for chunk in job["chunks"]:
        raw = V._engine_wav(voice, " ".join(job["words"][i] for i in chunk), job["params"], tmp)
        audio, r = sf.read(raw, dtype="float32", always_2d=True)
        raw.unlink(missing_ok=True)
        if rate is not None and r != rate:
            raise V.SynthesisError(f"{voice.spec} changed its rate from {rate} to {r}")
        rate = r
        pieces.append(trim(audio.mean(axis=1), r))
    parts, spans_samples, pos = [np.zeros(int(job["edges_s"][0] * rate), np.float32)], [], 0
    pos = len(parts[0])
    for k, piece in enumerate(pieces):
        if k:
            g = np.zeros(int(job["gaps_s"][k - 1] * rate), np.float32)
            parts.append(g)
            pos += len(g)
        spans_samples.append((pos, pos + len(piece)))
        parts.append(piece.astype(np.float32))
        pos += len(piece)
    parts.append(np.zeros(int(job["edges_s"][1] * rate), np.float32))
    joined = torch.from_numpy(np.concatenate(parts))
    # speed perturbation: read the samples as if recorded at rate * speed (rounded to 100 Hz: a short kernel)
    orig = int(round(rate * job["speed"] / 100.0)) * 100
    out = AF.resample(joined, orig, out_rate).numpy()
    factor = out_rate / orig
    peak = float(np.abs(out).max())
    out = out * (10 ** (job["params"].get("peak_db", -1.0) / 20) / peak)
    word_spans: list[tuple[float, float]] = [(0.0, 0.0)] * len(job["words"])
    for chunk, (a, b) in zip(job["chunks"], spans_samples):
        for i in chunk:
            word_spans[i] = (round(a * factor / out_rate, 4), round(b * factor / out_rate, 4))
    return out.astype(np.float32), word_spans


def make_noisy(job: dict, clean: np.ndarray, rate: int) -> np.ndarray:
    import torch

    from asr.data.audio import read_audio

    rng = np.random.default_rng(job["np_seed"])
    others = []
    for path in job.get("babble", []):
        try:
            others.append(read_audio(path, rate)[0])
        except Exception:  # noqa: BLE001 - a talker that failed: babble with the others
            pass
    plan = {"noise": job["noise"] if others or job["noise"] != "babble" else "white", "snr_db": job["snr_db"]}
    return A.augment(torch.from_numpy(clean), plan, rng, others, rate).numpy()


def make_masked(job: dict, clean: np.ndarray, spans: list[list[float]], rate: int) -> tuple[np.ndarray, list]:
    """Replace the audio of the masked words (+ a margin, at most half the gap to a neighbour) by white
    noise as loud as the speech (RMS over the words' spans, + ``burst_db``). Returns (audio, masked spans)."""
    rng = np.random.default_rng(job["np_seed"])
    out = clean.copy()
    bounds = sorted({tuple(s) for s in spans})
    speech = np.concatenate([clean[int(a * rate) : int(b * rate)] for a, b in bounds])
    level = float(np.sqrt(np.mean(speech**2))) * 10 ** (job["burst_db"] / 20)
    masked_spans = []
    for i in job["masked"]:
        a, b = spans[i]
        k = bounds.index((a, b))
        before = a - bounds[k - 1][1] if k else a
        after = bounds[k + 1][0] - b if k + 1 < len(bounds) else len(clean) / rate - b
        lo = max(0.0, a - min(job["margin_s"], before / 2))
        hi = min(len(clean) / rate, b + min(job["margin_s"], after / 2))
        s, e = int(np.floor(lo * rate)), int(np.ceil(hi * rate))
        # clipped rather than the whole utterance rescaled: outside the bursts the audio stays the clean one
        out[s:e] = np.clip(rng.standard_normal(e - s) * level, -0.99, 0.99).astype(np.float32)
        masked_spans.append((i, round(s / rate, 4), round(e / rate, 4)))
    return out, masked_spans


def _write_json(path: Path, obj: dict) -> None:
    write_text_atomic(path, json.dumps(obj) + "\n")


def run_job(job: dict) -> dict:
    """Make one utterance (its .json sidecar, then its wav); never raises."""
    res = {"utt": job["utt"], "kind": job["kind"]}
    start = time.process_time()
    try:
        wav = Path(job["wav"])
        if job["kind"] == "synth":
            audio, spans = synthesize_words(job, _TMP, _RATE)
            meta = {"spans": spans}
        else:
            meta_src = json.loads(Path(job["src_json"]).read_text(encoding="utf-8"))
            clean, rate = sf.read(job["src"], dtype="float32")
            if rate != _RATE:
                raise ValueError(f"{job['src']}: rate {rate}, expected {_RATE}")
            if job["kind"] == "noisy":
                audio, meta = make_noisy(job, clean, _RATE), {"spans": meta_src["spans"]}
            else:
                audio, masked = make_masked(job, clean, meta_src["spans"], _RATE)
                meta = {"spans": meta_src["spans"], "masked": masked}
        _write_json(wav.with_suffix(".json"), meta)  # the sidecar first: a wav is only there with its spans
        write_wav(wav, audio, _RATE)
        res["dur"] = len(audio) / _RATE
    except Exception as exc:  # noqa: BLE001 - an engine bug must not stop the corpus
        res["error"] = f"{type(exc).__name__}: {exc}"
    res["cpu"] = time.process_time() - start
    return res


def _run_one(job: dict) -> list[dict]:
    return [run_job(job)]


def run_jobs(jobs: list[dict], nj: int, tmp_root: Path, rate: int, desc: str) -> list[dict]:
    """Run jobs (one utterance each) on ``nj`` processes with a progress bar; returns their results."""
    return CJ.run_pool(jobs, nj, _run_one, _init_worker, (str(tmp_root), rate), len(jobs), desc, chunksize=4)


def sync_plan(plan_file: Path, entries: list[tuple[str, Path, str]]) -> int:
    """Remove outputs whose entry (key, path, signature) changed since the last run (with their .json
    beside them); record the plan (``key<TAB>signature`` lines)."""
    return CJ.sync_plan(plan_file, [(k, path, sig, sig) for k, path, sig in entries], sidecars=(".json",))


def is_done(u: Utt) -> bool:
    return u.wav.exists() and u.wav.with_suffix(".json").exists()


# ---------------------------------------------------------------- outputs


def write_data_dir(path: Path, plan: list[Utt], images: dict[str, Path], mismatch: dict[str, str] | None) -> dict:
    """Kaldi data dir of the planned utterances that were made, plus utt2image etc.; validated."""
    d = DataDir(path)
    durs, utt2image, spans, masked, utt2mis = {}, {}, {}, {}, {}
    for u in plan:
        if not is_done(u):
            continue
        meta = json.loads(u.wav.with_suffix(".json").read_text(encoding="utf-8"))
        d.wav_scp[u.utt] = str(u.wav.resolve())
        d.text[u.utt] = u.text
        d.utt2spk[u.utt] = u.spk
        durs[u.utt] = sf.info(str(u.wav)).duration
        utt2image[u.utt] = str(images[u.scene_id].resolve())
        spans[u.utt] = " ".join(f"{a:.3f}:{b:.3f}" for a, b in meta["spans"])
        if "masked" in meta:
            masked[u.utt] = " ".join(str(i) for i, _, _ in meta["masked"])
        if mismatch is not None:
            utt2mis[u.utt] = str(images[mismatch[u.scene_id]].resolve())
    if path.exists():
        for name in ("masked_words", "utt2image_mismatch"):
            (path / name).unlink(missing_ok=True)  # rewritten below when they apply
    if not d.utt2spk:
        log.warning("%s: no utterances", path)
        return {"utts": 0, "speakers": 0, "hours": 0.0}
    d.write()
    write_table(path / "utt2dur", {u: f"{t:.3f}" for u, t in durs.items()})
    write_table(path / "utt2image", utt2image)
    write_table(path / "word_spans", spans)
    if masked:
        write_table(path / "masked_words", masked)
    if utt2mis:
        write_table(path / "utt2image_mismatch", utt2mis)
    n = validate_data_dir(path)
    return {
        "utts": n,
        "speakers": len(set(d.utt2spk.values())),
        "hours": round(sum(durs.values()) / 3600, 4),
        "masked_utts": len(masked),
    }


# Words a caption can exchange and stay a well-formed description of some other scene (the image
# stage's swap negatives, loss.swap_negatives): one class per line. Shapes come in one number, counts
# without "one", places with the same preposition, so an exchange never breaks agreement.
WORD_CLASSES = {
    "colour": " ".join(SC.COLOURS),
    "shape_one": " ".join(SC.SHAPES),
    "shape_many": " ".join(SC.PLURAL[s] for s in SC.SHAPES),
    "count_many": "two three four",
    "place_on": "left right",
    "place_at": "top bottom",
}


def write_captions(path: Path, scenes: list[SC.Scene], images: dict[str, Path], per_image: int) -> int:
    """``images.scp`` and ``text`` keyed by caption id ``<scene>-c<k>`` (k < per_image caption styles), and
    ``word_classes`` (:data:`WORD_CLASSES`)."""
    if not 1 <= per_image <= 2:
        raise SystemExit(f"captions.captions_per_image must be 1 or 2, not {per_image}")
    scp, text = {}, {}
    for sc in scenes:
        for k in range(per_image):
            cid = f"{sc.scene_id}-c{k}"
            scp[cid] = str(images[sc.scene_id].resolve())
            text[cid] = SC.caption(sc, k)
    write_table(path / "images.scp", scp)
    write_table(path / "text", text)
    write_table(path / "word_classes", WORD_CLASSES)
    return len(text)


def write_caption_sets(data: Path, ccfg: dict, scene_sets: dict[str, list[SC.Scene]], images: dict[str, Path]) -> tuple[int, int]:
    """data/captions (training scenes if include_train_scenes, plus caption-only scenes) and data/captions_dev."""
    per_image = int(ccfg.get("captions_per_image", 2))
    cap_scenes = (scene_sets["train"] if ccfg.get("include_train_scenes", True) else []) + scene_sets["cap"]
    n_cap = write_captions(data / "captions", cap_scenes, images, per_image) if cap_scenes else 0
    n_capdev = write_captions(data / "captions_dev", scene_sets["capdev"], images, per_image) if scene_sets["capdev"] else 0
    return n_cap, n_capdev


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="corpus YAML (conf/corpus_quick.yaml, conf/corpus_tiny.yaml)")
    ap.add_argument("--data", required=True, help="output root for data dirs, images, wavs and bookkeeping")
    ap.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    ap.add_argument(
        "--captions-only", action="store_true", help="only the pictures and the caption lists (the image stage needs no speech)"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    t0 = time.time()
    cfg = load_config(args.config)
    seed, rate = int(cfg.get("seed", 1)), int(cfg.get("sample_rate", 16000))
    data = Path(args.data).resolve()
    corpus_dir = data / "local" / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)

    # 1. scenes and their pictures
    train_voices = parse_voices(cfg["voices"], "voices")
    scene_sets = {name: make_scenes(cfg, name, int(cfg[name]["num_scenes"]), seed) for name in ("train", "dev", "test")}
    ccfg = cfg.get("captions") or {}
    scene_sets["cap"] = make_scenes(cfg, "cap", int(ccfg.get("num_images", 0)), seed)
    scene_sets["capdev"] = make_scenes(cfg, "capdev", int(ccfg.get("dev_images", 0)), seed)
    all_scenes = {s.scene_id: s for ss in scene_sets.values() for s in ss}
    images = {sid: data / "images" / sid.split("-")[0] / f"{sid}.png" for sid in all_scenes}
    write_if_changed(
        corpus_dir / "scenes.jsonl", "".join(json.dumps(s.to_json(), sort_keys=True) + "\n" for s in all_scenes.values())
    )
    sync_plan(
        corpus_dir / "images.plan.tsv",
        [(sid, images[sid], short_hash(json.dumps(s.to_json(), sort_keys=True))) for sid, s in all_scenes.items()],
    )
    made_images = 0
    for sid, s in all_scenes.items():
        if not images[sid].exists():
            SC.save_png(s, images[sid])
            made_images += 1
    log.info("%d scenes, %d pictures made now", len(all_scenes), made_images)
    ccounts = write_caption_sets(data, ccfg, scene_sets, images)
    if args.captions_only:
        print(f"captions: {ccounts[0]} train, {ccounts[1]} dev (pictures and caption lists only)")
        return 0

    # 2. utterance plans
    plans: dict[str, list[Utt]] = {}
    for name in ("train", "dev", "test"):
        specs = cfg[name].get("voices")
        voices = parse_voices(specs, name) if specs else train_voices
        plans[name] = plan_speech(cfg, name, scene_sets[name], voices, data, seed)
    clean_test = plans.pop("test")
    plans["train"] = plans["train"] + plan_train_copies(cfg, plans["train"], seed)
    plans.update(plan_tests(cfg, clean_test, seed))
    for name, plan in plans.items():
        removed = sync_plan(corpus_dir / f"{name}.plan.tsv", [(u.utt, u.wav, u.signature) for u in plan])
        if removed:
            log.info("%s: %d wavs made for an older plan removed", name, removed)

    # 3. audio: clean synthesis, then the copies (they read the clean wavs)
    tmp_root = corpus_dir / "tmp"
    unique = {u.utt: u for plan in plans.values() for u in plan}
    existing = {name: sum(is_done(u) for u in plan) for name, plan in plans.items()}
    todo = [u for u in unique.values() if not is_done(u)]
    synth = sorted([u for u in todo if u.kind == "synth"], key=lambda u: stable_int(u.utt))
    results = run_jobs([{"kind": "synth", **u.job} for u in synth], args.nj, tmp_root, rate, "synthesis")
    copies = [u for u in todo if u.kind != "synth" and Path(u.job["src"]).exists()]
    results += run_jobs([u.job for u in copies], args.nj, tmp_root, rate, "noise and masking")
    shutil.rmtree(tmp_root, ignore_errors=True)
    failed = [r for r in results if "error" in r]
    for r in failed[:20]:
        log.warning("failed %s: %s", r["utt"], r["error"])
    write_if_changed(corpus_dir / "failed.tsv", "".join(f"{r['utt']}\t{r['kind']}\t{r['error']}\n" for r in failed))

    # 4. data dirs and caption lists
    test_ids = sorted({u.scene_id for u in clean_test})
    mismatch = mismatch_scene(test_ids, all_scenes, seed) if len(test_ids) > 1 else None
    set_of = {u.utt: name for name, plan in plans.items() for u in plan}
    sets = {}
    for name in ALL_SETS:
        stats = write_data_dir(data / name, plans[name], images, mismatch if name in TEST_SETS else None)
        stats["new"] = sum(1 for r in results if "dur" in r and set_of.get(r["utt"]) == name)
        stats["existing"] = existing[name]
        stats["failed"] = sum(1 for r in failed if set_of.get(r["utt"]) == name)
        sets[name] = stats
    n_cap, n_capdev = ccounts
    speed = {}
    for r in results:
        if "dur" in r:
            e = speed.setdefault(r["kind"], {"utts": 0, "audio_s": 0.0, "cpu_s": 0.0})
            e["utts"] += 1
            e["audio_s"] += r["dur"]
            e["cpu_s"] += r["cpu"]
    summary = {
        "config": str(args.config),
        "seed": seed,
        "nj": args.nj,
        "scenes": {k: len(v) for k, v in scene_sets.items()},
        "pictures_made": made_images,
        "sets": sets,
        "captions": {"train": n_cap, "dev": n_capdev},
        "speed": {k: {**v, "audio_s": round(v["audio_s"], 1), "cpu_s": round(v["cpu_s"], 1)} for k, v in speed.items()},
        "wall_s": round(time.time() - t0, 1),
    }
    write_text_atomic(corpus_dir / "summary.json", json.dumps(summary, indent=1) + "\n")
    print("=" * 72)
    print(f"mini_vis corpus ({args.config}, seed {seed}): scenes {summary['scenes']}")
    print(f"{'set':<12} {'utts':>6} {'spk':>4} {'hours':>7} {'masked':>6} {'new':>6} {'reused':>6} {'failed':>6}")
    for name, s in sets.items():
        print(
            f"{name:<12} {s['utts']:>6} {s['speakers']:>4} {s['hours']:>7.3f} {s.get('masked_utts', 0):>6} "
            f"{s['new']:>6} {s['existing']:>6} {s['failed']:>6}"
        )
    print(f"captions: {n_cap} train, {n_capdev} dev; wall time {summary['wall_s']} s")
    print("=" * 72)
    return 1 if failed and not any("dur" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
