"""X-LLM image stages 1-2: align the image interface (encoder + Q-Former + I-Adapter) to a frozen LLM.

    python -m asr.training.train_image --config conf/image_quick.yaml \\
        --captions data/captions --valid-captions data/captions_dev --exp-dir exp/image_quick

Per caption (H = the LLM's hidden size, Q = the Q-Former's queries):

    picture (3, H_img, W_img) -> ImageX2L -> (Q, H)
    LLM input: [prompt prefix] <image> [Q image embeddings] </image> [prompt suffix] [caption] <eos>
    loss: the frozen LLM's next-token loss on the caption tokens only (prefix and image positions masked)
          + optionally ``contrastive_weight`` x an image-text contrastive loss (InfoNCE between the
          best-matching projected image position and a vector of the caption: the mean of its frozen
          LLM token embeddings, with ``text_encoder: transformer`` plus those through small transformer
          layers, which see word order; the other captions of the batch are the negatives)
          + optionally ``itg_weight`` x BLIP-2's image-grounded text generation loss: a small decoder
          (:class:`CaptionDecoder`) writes the caption token by token from the image positions alone,
          so which colour goes with which shape and place is in the target (cheap: no LLM forward).

Batches are random captions, or (``batching.hard_negative_share`` > 0) partly groups of captions that
differ from each other in one word ("two red stars on the left" / "two red crosses on the left"):
hard negatives, which the contrastive loss can only tell apart by what the word names in the picture.

Everything of the interface is trained here, the image encoder included (no vision weights ship
offline: the embedded ``small_cnn`` encoder learns from the captions); the LLM stays frozen (LoRA
is refused: this stage aligns the interface to the LLM as it is). ``final/`` holds the interface
with ``freeze_encoder: true`` (later stages load it with a frozen encoder), ``image_stage.json``
(kind ``image_caption``: the LLM and prompt it was aligned to, the loss settings), ``itc_head.safetensors``
(the contrastive head, when the run had that loss; ``--init`` continues with it), ``itg_decoder.safetensors``
(the same for the ITG decoder) and ``eval.json``
(greedy captions of the validation pictures scored against their references: WER and exact-match rate).

Config (YAML), sections: ``image_x2l`` (:class:`ImageX2LConfig`: encoder, qformer, adapter),
``llm`` (:class:`LlmConfig`), ``prompt`` (:class:`PromptConfig`; the speech markers become image
markers), ``loss`` (``contrastive_weight``, ``caption_weight``, ``itg_weight``, ``itg_layers``, ``text_encoder``,
``text_layers``, ``swap_negatives``), ``batching`` (:class:`BatchingConfig`),
``train`` (:class:`TrainConfig`; ``max_batch_size`` is the batch size in pictures) and ``eval`` (``num_captions``, ``max_new_tokens``).
Data: a captions dir holds ``images.scp`` (caption id -> PNG path) and ``text`` (caption id ->
caption), Kaldi-style tables sorted by id (``recipes/mini_vis`` stage 0 writes them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from asr.config import load_config
from asr.data.captions import BatchingConfig, CaptionSet, make_sampler
from asr.io_utils import load_weights, write_text_atomic
from asr.models.caption import ImageCaptionModel, ImageStageConfig
from asr.models.image_x2l import ImageX2L
from asr.models.llm import load_llm
from asr.models.speech_llm import Prompt
from asr.training.stage import StageParts, run_stage, train_config
from asr.training.trainer import run_entry_point
from evaluation.captions import evaluate_captions, swap_retrieval

log = logging.getLogger(__name__)

SECTIONS = ("image_x2l", "llm", "prompt", "loss", "batching", "train", "eval")


def load_image_config(path: str | Path) -> dict:
    """The stage's YAML as a dict of sections; errors name the file."""
    cfg = load_config(path, sections=SECTIONS)
    try:
        ImageStageConfig.from_sections(cfg)  # validate every section now, not after minutes of loading
        BatchingConfig.from_dict(cfg.get("batching"))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None
    return cfg


def init_interface(model: ImageCaptionModel, init_dir: str | Path) -> None:
    """Start from the interface of an earlier run (e.g. contrastive pretraining): same architecture required."""
    init = ImageX2L.from_pretrained(init_dir, freeze_encoder=False)
    mine, theirs = asdict(model.x2l.config), asdict(init.config)
    for key in ("encoder", "qformer", "adapter", "llm_hidden_size"):
        if mine[key] != theirs[key]:
            raise ValueError(f"--init {init_dir}: its {key} ({theirs[key]}) differs from this config's ({mine[key]})")
    model.x2l.load_state_dict(init.state_dict(), strict=False)  # a frozen hf encoder is reloaded from its source
    log.info("image interface initialised from %s", init_dir)
    for stem, mine_head in model.loss_head_states().items():  # the loss heads, where the earlier run's fit
        head_file = Path(init_dir) / stem
        try:
            theirs = load_weights(init_dir, stem=stem)
        except FileNotFoundError:
            continue
        same_shapes = {k: v.shape for k, v in theirs.items()} == {k: v.shape for k, v in mine_head.items()}
        # integer tensors (the ITG vocabulary) say what the weights mean: they must be equal too
        if same_shapes and all(torch.equal(theirs[k], v) for k, v in mine_head.items() if not v.is_floating_point()):
            model.load_state_dict(theirs, strict=False)
            log.info("loss head initialised from %s", head_file)
        else:
            log.info(
                "loss head %s is another architecture or vocabulary (loss config, captions): this run's starts fresh", head_file
            )


def train(
    config_path: str | Path,
    captions: str | Path,
    valid_captions: str | Path | None,
    exp_dir: str | Path,
    overrides: dict | None = None,
    init: str | Path | None = None,
) -> Path:
    """Train the image interface on a captions dir; returns ``exp_dir/final`` (rerun = resume).

    ``init``: an earlier image-stage model dir whose interface weights this run starts from (a resumed
    run takes its own checkpoint instead)."""
    cfg = load_image_config(config_path)
    stage_cfg = ImageStageConfig.from_sections(cfg)
    train_cfg = train_config(cfg, overrides, config_path)
    eval_cfg = {"num_captions": 200, "max_new_tokens": 40, **(cfg.get("eval") or {})}

    def build(device) -> StageParts:
        llm = load_llm(stage_cfg.llm)
        swaps = stage_cfg.swap_negatives if stage_cfg.contrastive_weight > 0 else 0
        x2l = ImageX2L(stage_cfg.image_x2l, llm.hidden_size)
        size = x2l.picture_size()  # pictures of another size are resized to the encoder's
        data = CaptionSet(captions, Prompt(llm.tokenizer, stage_cfg.prompt), swaps, size)
        vocab = sorted({t for target in data.targets for t in target}) if stage_cfg.itg_weight > 0 else None
        model = ImageCaptionModel(stage_cfg, llm, x2l=x2l, caption_vocab=vocab)
        if init is not None:
            init_interface(model, init)
        batching = BatchingConfig.from_dict(cfg.get("batching"))
        sampler = make_sampler(data, train_cfg.max_batch_size, batching, shuffle=True, seed=train_cfg.seed)
        valid_fn, valid = None, None
        if valid_captions is not None:
            valid = CaptionSet(valid_captions, model.prompt, swaps, size)
            valid_sampler = make_sampler(valid, train_cfg.max_batch_size, batching, shuffle=False)
            valid_fn = lambda: (valid.collate(b) for b in valid_sampler)  # noqa: E731
        trainable = [p for p in model.parameters() if p.requires_grad]
        log.info(
            "image stage: %.2fM trainable parameters (encoder %s%s, Q-Former %d queries, %s I-Adapter), LLM %s frozen; "
            "%d captions of %d pictures in %d batches",
            sum(p.numel() for p in trainable) / 1e6,
            stage_cfg.image_x2l.encoder.type,
            " frozen" if stage_cfg.image_x2l.freeze_encoder else "",
            stage_cfg.image_x2l.qformer.num_queries,
            stage_cfg.image_x2l.adapter.type,
            stage_cfg.llm.name_or_path,
            len(data),
            data.images.shape[0],
            len(sampler),
        )

        def finalize(d: Path) -> None:
            cfg_file = d / "image_x2l.json"
            x2l_cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
            x2l_cfg["freeze_encoder"] = True  # later stages use the encoder as trained here, frozen
            write_text_atomic(cfg_file, json.dumps(x2l_cfg, indent=2) + "\n")
            if valid is not None and int(eval_cfg["num_captions"]) > 0:
                write_text_atomic(
                    d / "eval.json", json.dumps(evaluate_final(model, d, valid, valid_captions, size), indent=1) + "\n"
                )

        return StageParts(model, sampler, data.collate, valid_fn, trainable, {"--init model": init}, finalize)

    def evaluate_final(model: ImageCaptionModel, d: Path, valid: CaptionSet, valid_captions, size) -> dict:
        """Captions and retrieval scores of the validation pictures by the model as published (best/)."""
        model.x2l.load_state_dict(ImageX2L.from_pretrained(d).state_dict())
        for stem in model.loss_head_states():  # the same checkpoint's heads: save_pretrained wrote each one
            model.load_loss_head(load_weights(d, stem=stem), d / stem)
        scores = evaluate_captions(model, valid, int(eval_cfg["num_captions"]), int(eval_cfg["max_new_tokens"]))
        if (Path(valid_captions) / "word_classes").is_file():  # binding checks by likelihood
            swapped = CaptionSet(valid_captions, model.prompt, swap_negatives=4, size=size)
            for scorer, on in (("lm", stage_cfg.caption_weight > 0), ("itg", stage_cfg.itg_weight > 0)):
                if on:
                    scores.update(swap_retrieval(model, swapped, num=int(eval_cfg["num_captions"]), scorer=scorer))
        log.info("validation pictures: %s", {k: v for k, v in scores.items() if k != "examples"})
        return scores

    return run_stage(train_cfg, exp_dir, build)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="image-stage YAML (sections image_x2l, llm, prompt, loss, train, eval)")
    ap.add_argument("--captions", required=True, help="captions dir: images.scp + text")
    ap.add_argument("--valid-captions", help="captions dir for validation (best checkpoint, eval.json)")
    ap.add_argument("--exp-dir", required=True, help="output dir (rerun = resume); the model goes to EXP/final")
    ap.add_argument("--max-steps", type=int, help="override train.max_steps")
    ap.add_argument("--init", help="start from the interface in this model dir (e.g. the contrastive run's final/)")
    args = ap.parse_args(argv)
    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else None
    return run_entry_point(lambda: train(args.config, args.captions, args.valid_captions, args.exp_dir, overrides, args.init))


if __name__ == "__main__":
    sys.exit(main())
