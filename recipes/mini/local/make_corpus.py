#!/usr/bin/env python3
"""Stage 0 of recipes/mini: an English multi-voice synthetic corpus, as Kaldi data dirs.

    python local/make_corpus.py --config conf/corpus_quick.yaml --data data --nj 2

Writes ``<data>/{train,dev,test_unseen,test_real,test_real_ivr}`` (``wav.scp`` with absolute paths, ``text``,
``utt2spk``, ``spk2utt``, ``utt2dur``), the audio under ``<data>/wav/<set>/<speaker>/<utt>.wav``
(16 kHz mono 16-bit) and bookkeeping under ``<data>/local/corpus/``: ``sentences.tsv`` (the
filtered sentence pool and its split), ``<set>.plan.tsv`` (what each utterance is made of),
``failed.tsv`` and ``summary.json``.

* ``train`` and ``dev``: the training voices, sentences from disjoint buckets.
* ``test_unseen``: voices whose speaker (see :attr:`voices.Voice.identity`) is never heard in
  train/dev, reading sentences that never occur in train or dev.
* ``test_real``, ``test_real_ivr``: human speech shipped by Debian packages (:mod:`real_speech`).
* Augmentation: a configurable fraction of train utterances gets one *extra* noisy/reverberant
  copy ``<utt>-aug`` (same speaker and text); the clean originals stay.

Utterance ids are ``<speaker>-<6-digit index>``; the index is the utterance's position in its
set plus an offset per set (train 0, dev 600000, test_unseen 800000), so ids are unique across
sets. Everything is deterministic given the config's seed, except the audio of the piper voice
(its ONNX model samples noise internally, unseeded: same text and parameters, slightly different
waveform and duration on each synthesis).

Resumable: a wav that exists is not made again, unless the plan says the utterance changed
(another sentence, voice or parameters), in which case the old wav is removed first. Every file
is written to a temp name and renamed. A sentence that fails to synthesize is logged to
``failed.tsv`` and left out of the data dir; it is retried on the next run.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import shutil
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
try:
    import asr  # noqa: F401
except ImportError:  # running from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parents[2]))

import corpus_jobs  # noqa: E402
import numpy as np  # noqa: E402
import real_speech  # noqa: E402
import sentences as S  # noqa: E402
import soundfile as sf  # noqa: E402
import voices as V  # noqa: E402
import yaml  # noqa: E402
from corpus_jobs import cpu_seconds, run_pool, short_hash, stable_int, worker_dir, write_if_changed  # noqa: E402

from asr.data.audio import AudioError, read_audio, write_wav  # noqa: E402
from asr.data.datadir import DataDir, validate_data_dir  # noqa: E402
from asr.io_utils import write_table, write_text_atomic  # noqa: E402

log = logging.getLogger("make_corpus")

SYNTH_SETS = {"train": "train", "dev": "dev", "test_unseen": "test"}  # set -> sentence bucket
INDEX_OFFSET = {"train": 0, "dev": 600_000, "test_unseen": 800_000}
ALL_SETS = ("train", "dev", "test_unseen", "test_real", "test_real_ivr")


@dataclass
class Utt:
    """One planned utterance: where its wav goes, its transcript, and what makes its audio."""

    utt: str
    spk: str
    wav: Path
    text: str
    source: str
    signature: str  # JSON of everything that determines the audio; a change re-makes the wav
    kind: str  # "synth", "aug" or "copy"
    job: dict


# ---------------------------------------------------------------- config and planning


def load_config(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f) or {}
    for key in ("train", "dev", "test_unseen"):
        if key not in cfg:
            raise SystemExit(f"{path}: missing section {key!r}")
    return cfg


def _voices(specs: list[str], set_name: str) -> list[V.Voice]:
    """Parse voice specs, dropping (with a warning) those whose engine is not installed."""
    out = []
    for spec in specs:
        voice = V.Voice.parse(spec)
        if V.engine_available(voice.engine):
            try:
                V.check_voice(voice)
            except ValueError as exc:
                raise SystemExit(f"{set_name}: {exc}") from None
            out.append(voice)
        else:
            log.warning("%s: voice %s skipped: engine %r is not installed", set_name, spec, voice.engine)
    if not out:
        raise SystemExit(f"{set_name}: no usable voice among {specs}")
    return out


def check_unseen(train_voices: list[V.Voice], test_voices: list[V.Voice]) -> None:
    """Refuse a test voice that a listener would take for a training speaker."""
    seen = defaultdict(list)
    for v in train_voices:
        seen[v.identity].append(v.spec)
    for v in test_voices:
        if v.identity in seen:
            raise SystemExit(
                f"test_unseen voice {v.spec} is the same speaker ({v.identity}) as training voice(s) "
                f"{seen[v.identity]}: the test would not be on unseen voices"
            )


def transcripts_written(cfg: dict) -> bool:
    """``transcripts: written`` keeps case and punctuation in the data dirs' ``text`` (as the sentence
    was written and read by the synthesizer; scoring normalizes both sides); ``normalized`` (the
    default) writes lowercase words without punctuation."""
    form = cfg.get("transcripts", "normalized")
    if form not in ("written", "normalized"):
        raise SystemExit(f"transcripts: {form!r} is not 'written' or 'normalized'")
    return form == "written"


def plan_synthetic(cfg: dict, split: dict[str, list[S.Sentence]], data: Path, seed: int) -> dict[str, list[Utt]]:
    """Utterances of train, dev and test_unseen: sentence i // k read by voice i mod (#voices)."""
    perturb = cfg.get("perturb") or {}
    written = transcripts_written(cfg)
    train_voices = _voices(cfg["train"]["voices"], "train")
    plans: dict[str, list[Utt]] = {}
    for set_name, bucket in SYNTH_SETS.items():
        scfg = cfg[set_name]
        specs = scfg.get("voices") or (cfg["train"]["voices"] if set_name == "dev" else None)
        if not specs:
            raise SystemExit(f"{set_name}: no voices configured")
        voices = train_voices if set_name == "train" else _voices(specs, set_name)
        if set_name == "test_unseen":
            check_unseen(train_voices + (_voices(cfg["dev"]["voices"], "dev") if cfg["dev"].get("voices") else []), voices)
        n = int(scfg["num_utts"])
        k = int(scfg.get("utts_per_sentence", 1))
        if n > 0 and INDEX_OFFSET[set_name] + n > 1_000_000:
            raise SystemExit(f"{set_name}: at most {1_000_000 - INDEX_OFFSET[set_name]} utterances")
        if n > 0 and k > len(voices):
            log.warning("%s: utts_per_sentence=%d > %d voices: some sentences repeat a voice", set_name, k, len(voices))
        sents = S.take(split[bucket], n, k, seed, set_name) if n > 0 else []
        plan = []
        for i in range(n):
            s, v, idx = sents[i // k], voices[i % len(voices)], INDEX_OFFSET[set_name] + i
            params = V.draw_params(v, random.Random(f"{seed}:{set_name}:{idx}"), perturb)
            utt = f"{v.name}-{idx:06d}"
            wav = data / "wav" / set_name / v.name / f"{utt}.wav"
            sig = json.dumps({"voice": v.spec, "params": params, "tts": s.tts}, sort_keys=True)
            job = {"utt": utt, "text": s.tts, "params": params, "wav": str(wav)}
            plan.append(Utt(utt, v.name, wav, s.tts if written else s.text, s.source, sig, "synth", {"voice": v.spec, **job}))
        plans[set_name] = plan
    return plans


def plan_augment(cfg: dict, train: list[Utt], seed: int) -> list[Utt]:
    """Extra noisy/reverberant copies ``<utt>-aug`` of a ``fraction`` of the train utterances."""
    acfg = cfg.get("augment") or {}
    frac = float(acfg.get("fraction", 0.0))
    if frac <= 0 or not train:
        return []
    snr = acfg.get("snr_db", [5, 20])
    rt60 = acfg.get("rt60", [0.2, 0.8])
    noise_types = acfg.get("noise_types", ["white", "pink", "babble"])
    talkers_range = acfg.get("babble_talkers", [4, 8])
    pool = train[: int(acfg.get("babble_pool", 500))]  # the first utterances: stable when train grows
    out = []
    for src in train:
        rnd = random.Random(f"{seed}:aug:{src.utt}")
        if rnd.random() >= frac:
            continue
        reverb = rnd.random() < float(acfg.get("reverb_prob", 0.5))
        noisy = rnd.random() < float(acfg.get("noise_prob", 0.7)) or not reverb
        plan = {
            "rt60": round(rnd.uniform(*rt60), 3) if reverb else None,
            "noise": rnd.choice(noise_types) if noisy else None,
            "snr_db": round(rnd.uniform(*snr), 2) if noisy else None,
        }
        talkers = []
        if plan["noise"] == "babble":
            candidates = [u for u in pool if u.utt != src.utt]
            talkers = rnd.sample(candidates, min(rnd.randint(*talkers_range), len(candidates)))
        np_seed = stable_int(f"{seed}:augnp:{src.utt}")
        utt = f"{src.utt}-aug"
        wav = src.wav.with_name(f"{utt}.wav")
        sig = json.dumps(
            {
                "src": short_hash(src.signature),
                "aug": plan,
                "babble": {t.utt: short_hash(t.signature) for t in talkers},
                "np_seed": np_seed,
            },
            sort_keys=True,
        )
        job = {
            "utt": utt,
            "src": str(src.wav),
            "babble": [str(t.wav) for t in talkers],
            "plan": plan,
            "np_seed": np_seed,
            "wav": str(wav),
        }
        out.append(Utt(utt, src.spk, wav, src.text, src.source, sig, "aug", job))
    return out


def plan_real(cfg: dict, data: Path, set_name: str = "test_real", default_sources=real_speech.REAL_SOURCES) -> list[Utt]:
    """test_real, test_real_ivr: human speech converted to 16 kHz mono wav."""
    scfg = cfg.get(set_name) or {}
    names, most = scfg.get("sources", list(default_sources)), int(scfg.get("max_utts", 0))
    out = []
    for name in names:
        found = real_speech.read_source(name)
        if most and len(found) > most:  # evenly spread over the source
            found = [found[i * len(found) // most] for i in range(most)]
        for i, r in enumerate(found):
            utt = f"{r.speaker}-{i:06d}"
            wav = data / "wav" / set_name / r.speaker / f"{utt}.wav"
            sig = json.dumps({"src": str(r.path), "key": r.key}, sort_keys=True)
            out.append(
                Utt(
                    utt,
                    r.speaker,
                    wav,
                    r.written if transcripts_written(cfg) else r.text,
                    name,
                    sig,
                    "copy",
                    {"utt": utt, "src": str(r.path), "wav": str(wav)},
                )
            )
    return out


# ---------------------------------------------------------------- workers

_TMP: Path | None = None
_RATE = 16000


def _init_worker(tmp_root: str, sample_rate: int) -> None:
    global _TMP, _RATE
    _TMP = worker_dir(tmp_root, V.limit_threads)
    _RATE = sample_rate


def run_job(job: dict) -> list[dict]:
    """Make the wavs of one job; returns one result dict per utterance (never raises)."""
    start = cpu_seconds()
    results = []
    if job["kind"] == "synth":
        voice = V.Voice.parse(job["voice"])
        items = job["items"]
        try:
            outs = V.synthesize_batch(voice, [(it["text"], it["params"]) for it in items], _TMP, _RATE)
        except Exception as exc:  # an engine bug must not stop the corpus
            outs = [V.SynthesisError(f"{type(exc).__name__}: {exc}")] * len(items)
        for it, audio in zip(items, outs):
            res = {"utt": it["utt"], "engine": voice.engine, "kind": "synth"}
            if isinstance(audio, Exception):
                res["error"] = str(audio)
            else:
                try:
                    write_wav(it["wav"], audio, _RATE)
                    res["dur"] = len(audio) / _RATE
                except OSError as exc:
                    res["error"] = f"write failed: {exc}"
            results.append(res)
    else:
        res = {"utt": job["utt"], "engine": job["kind"], "kind": job["kind"]}
        try:
            wave = make_aug(job) if job["kind"] == "aug" else read_audio(job["src"], _RATE)[0]
            write_wav(job["wav"], wave, _RATE)
            res["dur"] = len(wave) / _RATE
        except Exception as exc:
            res["error"] = f"{type(exc).__name__}: {exc}"
        results.append(res)
    cpu = (cpu_seconds() - start) / max(1, len(results))
    for r in results:
        r["cpu"] = cpu
    return results


def make_aug(job: dict):
    """The augmented copy of one utterance (see :mod:`augment`)."""
    import augment

    wave, _ = read_audio(job["src"], _RATE)
    plan = dict(job["plan"])
    others = []
    if plan.get("noise") == "babble":
        for path in job["babble"]:
            try:
                others.append(read_audio(path, _RATE)[0])
            except AudioError:
                pass  # that talker failed to synthesize: babble with the others
        if not others:
            plan["noise"] = "pink"
    return augment.augment(wave, plan, np.random.default_rng(job["np_seed"]), others, _RATE)


def run_jobs(jobs: list[dict], nj: int, tmp_root: Path, sample_rate: int, desc: str) -> list[dict]:
    """Run jobs on ``nj`` processes with a progress bar; returns all per-utterance results."""
    total = sum(len(j["items"]) if j["kind"] == "synth" else 1 for j in jobs)
    return run_pool(jobs, nj, run_job, _init_worker, (str(tmp_root), sample_rate), total, desc)


# ---------------------------------------------------------------- resume bookkeeping


def sync_plan(plan_file: Path, plan: list[Utt]) -> int:
    """Remove wavs whose utterance changed since the last run, then record the new plan (a line
    ``utt<TAB>source<TAB>signature`` each). Returns the number of wavs removed."""
    return corpus_jobs.sync_plan(plan_file, [(u.utt, u.wav, f"{u.source}\t{u.signature}", u.signature) for u in plan])


def synth_jobs(todo: list[Utt], batch_size: int) -> list[dict]:
    """Batches of one voice each, slow engines first so that the pool ends evenly."""
    by_voice: dict[str, list[dict]] = defaultdict(list)
    for u in todo:
        by_voice[u.job["voice"]].append(u.job)
    order = {"festival": 0, "piper": 1, "flite": 2, "espeak": 3}
    jobs = []
    for spec in sorted(by_voice, key=lambda s: (order.get(s.split(":")[0], 9), s)):
        items = by_voice[spec]
        for i in range(0, len(items), batch_size):
            jobs.append({"kind": "synth", "voice": spec, "items": items[i : i + batch_size]})
    # interleave voices within an engine class so progress is even; keep slow engines first
    return sorted(jobs, key=lambda j: (order.get(j["voice"].split(":")[0], 9), stable_int(j["items"][0]["utt"])))


# ---------------------------------------------------------------- data dirs and summary


def write_data_dir(path: Path, plan: list[Utt]) -> dict:
    """Kaldi data dir of the planned utterances whose wav exists; validated. Returns its stats."""
    d = DataDir(path)
    durs = {}
    for u in plan:
        if u.wav.exists():
            d.wav_scp[u.utt] = str(u.wav.resolve())
            d.text[u.utt] = u.text
            d.utt2spk[u.utt] = u.spk
            durs[u.utt] = sf.info(str(u.wav)).duration
    if not d.utt2spk:
        log.warning("%s: no utterances", path)
        return {"utts": 0, "speakers": 0, "hours": 0.0}
    d.write()
    write_table(path / "utt2dur", {u: f"{t:.3f}" for u, t in durs.items()})
    n = validate_data_dir(path)
    return {"utts": n, "speakers": len(set(d.utt2spk.values())), "hours": round(sum(durs.values()) / 3600, 4)}


def oov_rate(train_texts: list[str], texts: list[str]) -> float:
    """Share of running words of ``texts`` that never occur in ``train_texts``."""
    vocab = {w for t in train_texts for w in t.split()}
    words = [w for t in texts for w in t.split()]
    return round(sum(w not in vocab for w in words) / max(1, len(words)), 4)


def engine_speed(results: list[dict]) -> dict:
    """Per engine: utterances, audio seconds and CPU seconds of this run's successful synthesis."""
    out: dict[str, dict] = {}
    for r in results:
        if "dur" not in r:
            continue
        e = out.setdefault(r["engine"], {"utts": 0, "audio_s": 0.0, "cpu_s": 0.0})
        e["utts"] += 1
        e["audio_s"] += r["dur"]
        e["cpu_s"] += r["cpu"]
    for e in out.values():
        e["utts_per_cpu_s"] = round(e["utts"] / max(e["cpu_s"], 1e-6), 2)
        e["audio_s_per_cpu_s"] = round(e["audio_s"] / max(e["cpu_s"], 1e-6), 1)
        e["audio_s"], e["cpu_s"] = round(e["audio_s"], 1), round(e["cpu_s"], 1)
    return out


def print_summary(summary: dict) -> None:
    p = print
    p("=" * 72)
    p(f"corpus summary ({summary['config']}, seed {summary['seed']}, --nj {summary['nj']})")
    st = summary["sentences"]
    p(
        f"sentences after filtering: {st['total']} ({', '.join(f'{k} {v}' for k, v in st['per_source'].items())}); "
        f"buckets train {st['buckets']['train']}, dev {st['buckets']['dev']}, test {st['buckets']['test']}"
    )
    p(f"{'set':<12} {'utts':>7} {'spk':>4} {'hours':>8} {'new':>6} {'reused':>6} {'failed':>6}")
    for name, s in summary["sets"].items():
        p(f"{name:<12} {s['utts']:>7} {s['speakers']:>4} {s['hours']:>8.3f} {s['new']:>6} {s['existing']:>6} {s['failed']:>6}")
    p(
        f"total hours: {summary['total_hours']:.3f}; OOV word rate vs train text: dev {summary['oov']['dev']:.1%}, "
        f"test_unseen {summary['oov']['test_unseen']:.1%}"
    )
    if summary["speed"]:
        p("synthesis speed this run (per CPU second, one process):")
        for eng, e in summary["speed"].items():
            p(
                f"  {eng:<9} {e['utts']:>6} utts {e['audio_s']:>9.1f} s audio {e['cpu_s']:>8.1f} CPU s: "
                f"{e['utts_per_cpu_s']:>7.2f} utt/s, {e['audio_s_per_cpu_s']:>6.1f} audio s/CPU s"
            )
    else:
        p("nothing synthesized this run (all wavs already there)")
    p(f"wall time {summary['wall_s']:.1f} s; data dirs: {', '.join(summary['data_dirs'])}")
    p("=" * 72)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="corpus YAML (conf/corpus_quick.yaml, conf/corpus_full.yaml)")
    ap.add_argument("--data", required=True, help="output root for data dirs, wavs and bookkeeping")
    ap.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s", stream=sys.stderr)
    t_start = time.time()

    cfg = load_config(args.config)
    seed = int(cfg.get("seed", 1))
    rate = int(cfg.get("sample_rate", 16000))
    data = Path(args.data).resolve()
    corpus_dir = data / "local" / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)

    # 1. sentences
    scfg = cfg.get("sentences") or {}
    sfilter = S.SentenceFilter(
        S.load_dictionary(scfg.get("dictionary", S.DICTIONARY)),
        min_words=int(scfg.get("min_words", 4)),
        max_words=int(scfg.get("max_words", 20)),
        min_dict_fraction=float(scfg.get("min_dict_fraction", 0.9)),
    )
    sources = scfg.get("sources") or {name: None for name in S.SOURCES}
    pool, source_stats = S.harvest(sources, sfilter, seed)
    split = S.split_by_sentence(pool, float(scfg.get("test_percent", 4)), float(scfg.get("dev_percent", 4)), seed)
    bucket_of = {s.text: b for b, ss in split.items() for s in ss}
    write_if_changed(corpus_dir / "sentences.tsv", "".join(f"{bucket_of[s.text]}\t{s.source}\t{s.text}\t{s.tts}\n" for s in pool))
    log.info("%d sentences after filtering: %s", len(pool), {k: v["kept"] for k, v in source_stats.items()})

    # 2. plans, and removal of wavs that no longer match them
    plans = plan_synthetic(cfg, split, data, seed)
    plans["train"] += plan_augment(cfg, plans["train"], seed)
    plans["test_real"] = plan_real(cfg, data)
    plans["test_real_ivr"] = plan_real(cfg, data, "test_real_ivr", real_speech.IVR_SOURCES)
    for name, plan in plans.items():
        removed = sync_plan(corpus_dir / f"{name}.plan.tsv", plan)
        if removed:
            log.info("%s: %d wavs made for an older plan removed", name, removed)

    # 3. audio: synthesis and real speech first, then augmentation (it reads the clean wavs)
    tmp_root = corpus_dir / "tmp"
    existing = {name: sum(u.wav.exists() for u in plan) for name, plan in plans.items()}
    todo = [u for plan in plans.values() for u in plan if not u.wav.exists()]
    jobs = [{"kind": "copy", **u.job} for u in todo if u.kind == "copy"]
    jobs += synth_jobs([u for u in todo if u.kind == "synth"], int(cfg.get("batch_size", 16)))
    results = run_jobs(jobs, args.nj, tmp_root, rate, "synthesis")
    aug_jobs = [{"kind": "aug", **u.job} for u in todo if u.kind == "aug" and Path(u.job["src"]).exists()]
    results += run_jobs(aug_jobs, args.nj, tmp_root, rate, "augmentation")
    shutil.rmtree(tmp_root, ignore_errors=True)

    failed = [r for r in results if "error" in r]
    for r in failed:
        log.warning("failed %s (%s): %s", r["utt"], r["engine"], r["error"])
    write_if_changed(corpus_dir / "failed.tsv", "".join(f"{r['utt']}\t{r['engine']}\t{r['error']}\n" for r in failed))

    # 4. data dirs
    set_of = {u.utt: name for name, plan in plans.items() for u in plan}
    sets = {}
    for name in ALL_SETS:
        stats = write_data_dir(data / name, plans[name])
        stats["new"] = sum(1 for r in results if "dur" in r and set_of.get(r["utt"]) == name)
        stats["existing"] = existing[name]
        stats["failed"] = sum(1 for r in failed if set_of.get(r["utt"]) == name)
        sets[name] = stats

    train_texts = [S.normalize_text(u.text) for u in plans["train"]]
    summary = {
        "config": str(args.config),
        "seed": seed,
        "nj": args.nj,
        "sentences": {
            "total": len(pool),
            "per_source": {k: v["kept"] for k, v in source_stats.items()},
            "buckets": {k: len(v) for k, v in split.items()},
            "source_stats": source_stats,
        },
        "sets": sets,
        "total_hours": round(sum(s["hours"] for s in sets.values()), 3),
        "oov": {n: oov_rate(train_texts, [S.normalize_text(u.text) for u in plans[n]]) for n in ("dev", "test_unseen")},
        "speed": engine_speed(results),
        "wall_s": round(time.time() - t_start, 1),
        "data_dirs": [str(data / n) for n in ALL_SETS],
    }
    summary_file = corpus_dir / "summary.json"
    write_text_atomic(summary_file, json.dumps(summary, indent=1) + "\n")
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
