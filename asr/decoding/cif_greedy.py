"""Stage-1 decoding: batched CIF greedy search over a dump dir, writing a Kaldi-style decode dir.

    out_dir/hyp            utt -> recognized text  (Kaldi ``text`` format)
    out_dir/ref            utt -> reference text (copied from the dump dir, when it has one)
    out_dir/hyp_tokens     utt -> unit pieces with the encoder frame each one fired at
    out_dir/decode_info.json  timing (real-time factor) and CIF compression statistics
Scoring (result.txt, wer) is done by ``evaluation.score_dir`` on this directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import kaldiio
import torch
from tqdm import tqdm

from asr.data.batching import FrameBatchSampler, pad_features
from asr.decoding.decode_dir import read_dump, write_refs
from asr.io_utils import write_table, write_text_atomic
from asr.models.auto import load_stage1
from asr.models.cif_asr import CifAsrModel
from asr.tokenizer import Tokenizer, load_tokenizer


def load_cif_model(model_dir: str | Path) -> tuple[CifAsrModel, Tokenizer, dict]:
    """A stage-1 model dir -> (its recognizer, its tokenizer, its feature description ``feat_info.json``)."""
    model_dir = Path(model_dir)
    model = load_stage1(model_dir)
    tokenizer = load_tokenizer(model_dir / "tokenizer")
    feat_info = json.loads((model_dir / "feat_info.json").read_text())
    return model, tokenizer, feat_info


def decode_dump_dir(
    model_dir: str | Path,
    dump_dir: str | Path,
    out_dir: str | Path,
    batch_frames: int = 40000,
    tail_threshold: float | None = None,
    decoding: str | None = None,
) -> dict:
    """``tail_threshold``: CIF's end-of-utterance weight for this decoding (default: the model's);
    ``decoding``: how a whisper_cformer model writes its transcript, "parallel" or "read" (default:
    the model's config)."""
    model, tokenizer, feat_info = load_cif_model(model_dir)
    if tail_threshold is not None:
        model.cif.set_tail_threshold(tail_threshold)
    dump_dir, out_dir = Path(dump_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    feats_scp, num_frames = read_dump(dump_dir)
    utts = list(feats_scp)
    sampler = FrameBatchSampler([num_frames[u] for u in utts], batch_frames, shuffle=False)
    hyps, pieces = {}, {}
    total_tokens = total_enc_frames = 0
    start = time.perf_counter()
    for batch in tqdm(sampler, desc=f"decode {dump_dir.name}", mininterval=5):
        feats, lengths = pad_features([kaldiio.load_mat(feats_scp[utts[i]]) for i in batch])
        result = model.transcribe(feats, lengths, decoding)
        for j, i in enumerate(batch):
            utt = utts[i]
            ids = result["tokens"][j]
            hyps[utt] = tokenizer.decode(ids)
            pieces[utt] = " ".join(f"{p}@{f}" for p, f in zip(tokenizer.pieces(ids), result["fire_frames"][j]))
            total_tokens += len(ids)
            total_enc_frames += result["frame_lengths"][j]
    elapsed = time.perf_counter() - start
    audio_sec = sum(num_frames[u] for u in utts) / feat_info["frame_rate_hz"]
    write_table(out_dir / "hyp", {u: hyps.get(u, "") for u in utts})
    write_table(out_dir / "hyp_tokens", pieces)
    write_refs(dump_dir, out_dir, utts)
    info = {
        "model_dir": str(model_dir),
        "dump_dir": str(dump_dir),
        "num_utts": len(utts),
        "audio_seconds": round(audio_sec, 2),
        "decode_seconds": round(elapsed, 2),
        "rtf": round(elapsed / max(audio_sec, 1e-9), 4),
        "cif_tokens_per_second": round(total_tokens / max(audio_sec, 1e-9), 3),
        "encoder_frames_per_second": round(total_enc_frames / max(audio_sec, 1e-9), 3),
        "threads": torch.get_num_threads(),
        "cif_tail_threshold": model.cif.tail_threshold,
        "decoding": decoding or getattr(model.config, "decoding", "parallel"),
    }
    write_text_atomic(out_dir / "decode_info.json", json.dumps(info, indent=2) + "\n")
    return info
