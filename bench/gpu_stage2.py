"""GPU check of X-LLM stage 2 at real LLM sizes: adapter training steps through a frozen, randomly
initialized GLM-4-9B-sized and ChatGLM3-6B-sized LLM in bf16, on real speech features.

    python -m bench.gpu_stage2 --stage1 DIR --feats FEATS.pt --tokenizer DIR --out OUT [--tiny]

- ``--stage1``: a trained stage-1 model dir (encoder layers + C-Former; frozen here);
- ``--feats``: ``torch.save``d {"feats": [(T_i, F) tensors], "texts": [str]} of real utterances
  (cached frozen-Whisper features of the mini recipe, as ``bench.gpu_stage2 --pack`` writes them);
- ``--tokenizer``: an LLM tokenizer dir used to make the target token sequences (the random LLMs'
  vocabularies are larger, so the ids are valid; lengths are what matter for the timing).

Per LLM: parameters, step time, LLM tokens/s (prompt + speech + transcript positions through
forward and backward), speech seconds/s, peak GPU memory; with and without gradient checkpointing.
Random weights: throughput and memory are real, the loss values are not meaningful.
``--tiny`` shrinks the LLMs to run the same code on a CPU (a check of the script, not a benchmark).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

# Published shapes (config.json of each model); ChatGLM3-6B's architecture is built as transformers'
# GLM (the same blocks: RMSNorm, SwiGLU, grouped-query attention with 2 KV groups, partial RoPE).
LLM_SHAPES = {
    "glm4-9b-sized": (
        "glm4",
        dict(
            vocab_size=151552,
            hidden_size=4096,
            num_hidden_layers=40,
            num_attention_heads=32,
            num_key_value_heads=2,
            intermediate_size=13696,
            head_dim=128,
        ),
    ),
    "chatglm3-6b-sized": (
        "glm",
        dict(
            vocab_size=65024,
            hidden_size=4096,
            num_hidden_layers=28,
            num_attention_heads=32,
            num_key_value_heads=2,
            intermediate_size=13696,
            head_dim=128,
        ),
    ),
}
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, head_dim=16)


def random_llm(family: str, shape: dict, dtype: torch.dtype, device: str):
    from transformers import Glm4Config, Glm4ForCausalLM, GlmConfig, GlmForCausalLM

    config_cls, model_cls = (Glm4Config, Glm4ForCausalLM) if family == "glm4" else (GlmConfig, GlmForCausalLM)
    config = config_cls(**shape, max_position_embeddings=8192, pad_token_id=0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.requires_grad_(False)
    return model.eval()


def pack(dump_dir: Path, out: Path, num_utts: int) -> None:
    """Write the features + texts file this script reads, from a dump dir (run on the CPU machine)."""
    import kaldiio

    from asr.data.datadir import read_table

    feats, texts = read_table(dump_dir / "feats.scp"), read_table(dump_dir / "text")
    ids = sorted(feats)[:num_utts]
    torch.save({"feats": [torch.tensor(kaldiio.load_mat(feats[u])).half() for u in ids], "texts": [texts[u] for u in ids]}, out)


def run(args) -> dict:
    from transformers import AutoTokenizer

    from asr.data.batching import IGNORE_ID, pad_features
    from asr.models.cif_asr import CifAsrModel
    from asr.models.llm import LlmConfig, LoadedLlm
    from asr.models.s_adapter import SAdapterConfig
    from asr.models.speech_llm import SpeechLlm, SpeechLlmConfig

    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = torch.load(args.feats)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    results = {
        "device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "batch_size": args.batch_size,
        "runs": [],
    }
    for name, (family, shape) in LLM_SHAPES.items():
        if args.tiny:
            shape = {**shape, **TINY, "vocab_size": max(len(tokenizer), 1024)}
        t0 = time.perf_counter()
        llm_model = random_llm(family, shape, torch.bfloat16, device)
        init_s = time.perf_counter() - t0
        n_params = sum(p.numel() for p in llm_model.parameters())
        loaded = LoadedLlm(
            model=llm_model, tokenizer=tokenizer, config=LlmConfig(name_or_path=name, dtype="bfloat16", device=device)
        )
        stage1 = CifAsrModel.from_pretrained(args.stage1)
        model = SpeechLlm(SpeechLlmConfig(llm=loaded.config, adapter=SAdapterConfig(hidden_dim=2048)), stage1, loaded)
        model.train()
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        for checkpointing in (False, True):
            if checkpointing:
                llm_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                model.train()  # checkpointing acts in train mode only
                assert llm_model.training and llm_model.is_gradient_checkpointing
            torch.cuda.empty_cache() if device == "cuda" else None
            torch.cuda.reset_peak_memory_stats() if device == "cuda" else None
            times, tokens, speech_s = [], 0, 0.0
            for step in range(args.warmup + args.steps):
                lo = (step * args.batch_size) % max(1, len(data["texts"]) - args.batch_size)
                idx = list(range(lo, lo + args.batch_size))
                feats, lengths = pad_features([data["feats"][i].float() for i in idx])
                targets = [model.prompt.target_ids(data["texts"][i]) for i in idx]
                tl = torch.tensor([len(t) for t in targets])
                tgt = torch.full((len(idx), int(tl.max())), IGNORE_ID)
                for b, t in enumerate(targets):
                    tgt[b, : len(t)] = torch.tensor(t)
                if device == "cuda":
                    torch.cuda.synchronize()
                t1 = time.perf_counter()
                out = model(feats, lengths, tgt.to(model.device), tl.to(model.device))
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                if device == "cuda":
                    torch.cuda.synchronize()
                if step >= args.warmup:
                    times.append(time.perf_counter() - t1)
                    tokens += int(out["positions"])
                    speech_s += float(lengths.sum()) / 50.0
            step_s = sum(times) / len(times)
            row = {
                "llm": name,
                "params_b": round(n_params / 1e9, 2),
                "init_s": round(init_s, 1),
                "gradient_checkpointing": checkpointing,
                "step_s": round(step_s, 3),
                "llm_tokens_per_s": round(tokens / sum(times)),
                "speech_s_per_s": round(speech_s / sum(times), 1),
                "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device == "cuda" else None,
                "loss": round(float(out["loss"].detach()), 3),
            }
            if checkpointing:  # LLM decoding of one batch (greedy, KV cache), after a warm-up call
                model.eval()
                for _attempt in range(2):
                    if device == "cuda":
                        torch.cuda.synchronize()
                    t1 = time.perf_counter()
                    hyps = model.generate(feats, lengths)
                    if device == "cuda":
                        torch.cuda.synchronize()
                gen_s = time.perf_counter() - t1
                row["generate_s"] = round(gen_s, 3)
                row["generated_tokens_per_s"] = round(sum(len(h["llm_ids"]) for h in hyps) / gen_s)
                model.train()
            print(json.dumps(row), flush=True)
            results["runs"].append(row)
        del model, llm_model, loaded, opt
        if device == "cuda":
            torch.cuda.empty_cache()
    return results


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage1", type=Path)
    p.add_argument("--feats", type=Path, required=True)
    p.add_argument("--tokenizer", type=Path)
    p.add_argument("--out", type=Path)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--tiny", action="store_true", help="tiny LLM shapes: check the script on a CPU")
    p.add_argument("--pack", type=Path, help="instead: write --feats from this dump dir")
    p.add_argument("--num-utts", type=int, default=96)
    args = p.parse_args(argv)
    if args.pack:
        pack(args.pack, args.feats, args.num_utts)
        return
    results = run(args)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "gpu_stage2.json").write_text(json.dumps(results, indent=2) + "\n")
        lines = [
            f"Device: {results['device']}, torch {results['torch']}, batch {results['batch_size']} utterances, bf16 LLM (random init), adapter trained",
            "",
            "| LLM | params (B) | grad. ckpt | step (s) | LLM tokens/s | speech s/s | peak GPU mem (GiB) | generate batch (s) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results["runs"]:
            lines.append(
                f"| {r['llm']} | {r['params_b']} | {'yes' if r['gradient_checkpointing'] else 'no'} | {r['step_s']} | "
                f"{r['llm_tokens_per_s']} | {r['speech_s_per_s']} | {r['peak_mem_gib']} | {r.get('generate_s', '')} |"
            )
        (args.out / "gpu_stage2.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
