"""Stage-2 decoding (mini recipe stages 6-7): the LLM writes the transcript from the speech embeddings.

Batched over a dump dir like stage-1 decoding, into a Kaldi-style decode dir:

    out_dir/hyp               utt -> LLM transcript
    out_dir/ref               utt -> reference text (when the dump dir has one; see decode_dir.write_refs)
    out_dir/hyp_cif           utt -> the CIF greedy transcript of the same pass (what the LLM was shown)
    out_dir/decode_info.json  real-time factor, LLM speech positions per second of audio against
                              encoder frames, beam size, empty outputs and repetition cuts

An empty LLM output falls back to the CIF transcript (counted in decode_info.json).

A stage-3 (multimodal) model dir decodes with a picture per utterance when ``image_table`` names a
table of the dump dir (``utt2image``: the true picture, ``utt2image_mismatch``: another scene's),
and from the speech alone (the stage-2 prompt) without one; decode_info.json records which (and the
picture guidance weight, when the picture's effect is amplified).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import kaldiio
from tqdm import tqdm

from asr.data.batching import FrameBatchSampler, pad_features
from asr.data.image import PictureTable
from asr.decoding.decode_dir import read_dump, write_refs
from asr.io_utils import write_table, write_text_atomic
from asr.models.loading import load_llm_decoder


def decode_dump_dir(
    model_dir: str | Path,
    dump_dir: str | Path,
    out_dir: str | Path,
    beam_size: int = 1,
    batch_size: int = 8,
    device: str | None = None,
    cif_weight: float = 0.0,
    image_table: str | None = None,
    max_utts: int | None = None,
    picture_guidance: float = 0.0,
) -> dict:
    """Decode a dump dir (``max_utts``: only that many utterances, evenly spaced over the sorted ids;
    ``picture_guidance``: with ``image_table``, greedy decoding that amplifies the picture's effect,
    see :mod:`asr.models.picture_guidance`)."""
    model_dir, dump_dir, out_dir = Path(model_dir), Path(dump_dir), Path(out_dir)
    model, speech, stage1_dir = load_llm_decoder(model_dir, device=device)
    units = speech.stage1_units()  # loaded with the model
    pictures = None
    if image_table:
        if model is speech:
            raise ValueError(f"{model_dir} is a speech-only (stage-2) model: it takes no picture ({image_table})")
        pictures = PictureTable(dump_dir / image_table, model.x2l.picture_size())
    if picture_guidance and pictures is None:
        raise ValueError(
            "picture guidance needs an image table (--image-table): it contrasts decoding with and without the picture"
        )
    feat_info = json.loads((stage1_dir / "feat_info.json").read_text())
    feats_scp, num_frames = read_dump(dump_dir)
    ids = [u for u in feats_scp if u in num_frames]
    selected = None  # all of the dump dir's utterances are to be decoded (and scored)
    if max_utts is not None and 0 < max_utts < len(ids):
        ids = [ids[i * len(ids) // max_utts] for i in range(max_utts)]
        selected = ids
    if pictures is not None:
        missing = [u for u in ids if u not in pictures.index_of]
        if missing:
            raise ValueError(f"{dump_dir / image_table}: no picture for {len(missing)} utterance(s), e.g. {missing[0]!r}")
    sampler = FrameBatchSampler([num_frames[u] for u in ids], max_frames=10**9, shuffle=False, max_batch_size=batch_size)
    hyps, cif_hyps = {}, {}
    stats = {"empty_fallbacks": 0, "repetition_cuts": 0, "speech_positions": 0, "encoder_frames": 0}
    t0 = time.perf_counter()
    for batch in tqdm(sampler.batches, desc=f"llm decode {dump_dir.name}", mininterval=10):
        utts = [ids[i] for i in batch]
        feats, lengths = pad_features([kaldiio.load_mat(feats_scp[u]) for u in utts])
        extra = {"images": pictures.pictures(utts)} if pictures is not None else {}
        if picture_guidance:
            extra["picture_guidance"] = picture_guidance
        for utt, res in zip(utts, model.generate(feats, lengths, num_beams=beam_size, cif_weight=cif_weight, **extra)):
            cif_text = units.decode(res["cif_tokens"])
            cif_hyps[utt] = cif_text
            stats["speech_positions"] += max(1, len(res["cif_tokens"]))
            stats["encoder_frames"] += len(res["alphas"])
            stats["repetition_cuts"] += int(res["repetition_cut"])
            if not res["text"]:
                stats["empty_fallbacks"] += 1
            hyps[utt] = res["text"] or cif_text
    elapsed = time.perf_counter() - t0
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(out_dir / "hyp", hyps)
    write_table(out_dir / "hyp_cif", cif_hyps)
    write_refs(dump_dir, out_dir, list(hyps), selected)
    audio_s = sum(num_frames[u] for u in hyps) / feat_info["frame_rate_hz"]
    info = {
        "model_dir": str(model_dir),
        "data_dir": str(dump_dir.resolve()),
        "image": image_table or "none",
        "picture_guidance": picture_guidance,
        "max_utts": max_utts,
        "utts": len(hyps),
        "beam_size": beam_size,
        "cif_weight": cif_weight,
        "batch_size": batch_size,
        "audio_seconds": round(audio_s, 2),
        "decode_seconds": round(elapsed, 2),
        "rtf": round(elapsed / max(audio_s, 1e-9), 4),
        "llm_positions_per_second": round(stats["speech_positions"] / max(audio_s, 1e-9), 3),
        "encoder_frames_per_second": round(stats["encoder_frames"] / max(audio_s, 1e-9), 3),
        "native_frames_per_second": feat_info["frame_rate_hz"],
        **stats,
    }
    write_text_atomic(out_dir / "decode_info.json", json.dumps(info, indent=2) + "\n")
    return info
