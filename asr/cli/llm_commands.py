"""``asr`` subcommands of X-LLM stage 2: train the S-Adapter, decode with the LLM, export a model dir."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from asr.cli.commands import add_train_overrides, train_overrides


# ---- train-llm ----------------------------------------------------------------------------------
def add_train_llm(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="stage-2 YAML: speech_llm {llm, adapter, prompt}, train")
    p.add_argument("--stage1", required=True, help="stage-1 model dir (exp/<tag>/final), kept frozen")
    p.add_argument("--train-dir", required=True, help="dump dir of the training set (feats.scp, text)")
    p.add_argument("--valid-dir", help="dump dir for validation after each epoch")
    p.add_argument("--exp-dir", required=True, help="output dir; a rerun resumes from its newest checkpoint")
    add_train_overrides(p)
    p.set_defaults(func=run_train_llm)


def run_train_llm(args) -> int:
    from asr.training import distributed as dist
    from asr.training.train_speech_llm import train

    final = train(args.config, args.stage1, args.train_dir, args.valid_dir, args.exp_dir, train_overrides(args))
    if dist.is_main():
        print(f"stage-2 model: {final}")
    return 0


# ---- decode-llm ---------------------------------------------------------------------------------
def add_decode_llm(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="stage-2 or stage-3 (multimodal) model dir (exp/<tag>/final)")
    p.add_argument("--data-dir", required=True, help="dump dir (feats.scp, utt2num_frames, text)")
    p.add_argument(
        "--image-table",
        help="stage-3 models: the dump dir's table of pictures to show with the speech "
        "(utt2image: the true ones, utt2image_mismatch: another scene's); default: no picture",
    )
    p.add_argument("--out-dir", required=True, help="decode dir to write hyp, hyp_cif, ref, decode_info.json")
    p.add_argument("--beam-size", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument(
        "--cif-weight",
        type=float,
        default=0.0,
        help="weight of the stage-1 CIF classifier's vote on each LLM token (0: the LLM alone)",
    )
    p.add_argument(
        "--picture-guidance",
        type=float,
        default=0.0,
        help="with --image-table, greedy: amplify the picture's effect on each token by this weight "
        "(log p with picture + W x (log p with - log p without); 0: plain decoding)",
    )
    p.add_argument("--max-utts", type=int, help="decode only this many utterances, evenly spaced over the sorted ids")
    p.add_argument("--device", help="cpu | cuda (default: the config's)")
    p.set_defaults(func=run_decode_llm)


def run_decode_llm(args) -> int:
    from asr.decoding.llm_decode import decode_dump_dir

    info = decode_dump_dir(
        args.model_dir,
        args.data_dir,
        args.out_dir,
        beam_size=args.beam_size,
        batch_size=args.batch_size,
        device=args.device,
        cif_weight=args.cif_weight,
        image_table=args.image_table,
        max_utts=args.max_utts,
        picture_guidance=args.picture_guidance,
    )
    print(json.dumps(info))
    return 0


# ---- export -------------------------------------------------------------------------------------
def add_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="stage-2 model dir (exp/<tag>/final) or a stage-1 one")
    p.add_argument("--out", required=True, help="the self-contained dir `asr transcribe --model` loads")
    p.add_argument("--beam-size", type=int, default=1, help="decoding default recorded for `asr transcribe`")
    p.add_argument("--cif-weight", type=float, default=0.0, help="decoding default recorded for `asr transcribe`")
    p.add_argument(
        "--cif-tail-threshold",
        type=float,
        help="the stage-1 model's end-of-utterance CIF weight in the export (tuned on dev with asr decode)",
    )
    p.add_argument(
        "--dtype",
        choices=["float16", "float32"],
        help="stage-1 Whisper C-Former: save the weights in this dtype (float16 halves the dir)",
    )
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    import torch

    from asr.export import export_model

    dtype = getattr(torch, args.dtype) if args.dtype else None
    out = export_model(
        Path(args.model_dir),
        Path(args.out),
        {"beam_size": args.beam_size, "cif_weight": args.cif_weight},
        dtype,
        args.cif_tail_threshold,
    )
    print(f"exported: {out}")
    return 0


COMMANDS = {
    "train-llm": (add_train_llm, "train the S-Adapter into a frozen LLM (X-LLM stage 2), resumable"),
    "decode-llm": (add_decode_llm, "LLM decoding of a dump dir into a decode dir (beam search)"),
    "export": (add_export, "pack stage-1 model, adapter, tokenizer, configs and the LLM reference into one dir"),
}
