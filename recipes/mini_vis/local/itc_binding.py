#!/usr/bin/env python3
"""Does an image stage know which colour, shape and place go together?

    python local/itc_binding.py --model-dir exp/image_itc_itg/final --captions data/captions_dev [--scorer itg]
    python local/itc_binding.py --checkpoint exp/image_itc_itg/checkpoints/step_00003000.pt \\
        --config conf/image_itc_itg.yaml --captions data/captions_dev

For every caption naming two groups ("two orange stars at the top and two red diamonds on the left")
three swapped captions are made: the two colours exchanged, the two shapes exchanged (numbers kept:
"two red stars ... two orange diamonds"), the two places exchanged. Each has exactly the words of the
true caption, so a bag-of-words caption vector cannot tell them apart. Printed (JSON): per swap kind,
the share of pictures whose true caption scores higher than the swapped one (ties count half; chance
0.5), and with the contrastive scorer the one-word-neighbour retrieval of
``evaluation.captions.hard_retrieval``. The scorer: the contrastive similarity (itc), the ITG
decoder's caption likelihood (itg) or the frozen LLM's caption likelihood after the picture (lm).

It reads an image-stage model dir (``final/``, ``best/``: the model with its loss settings and heads,
through ``asr.models.load_model_dir``) or a training checkpoint of any step with the config that
trained it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scenes as SC  # noqa: E402

from asr.data.captions import CaptionSet  # noqa: E402
from asr.data.captions import swapped_captions as swapped_captions_of_class  # noqa: E402
from asr.io_utils import load_weights  # noqa: E402
from asr.models.caption import ITG_HEAD, ImageCaptionModel, ImageStageConfig  # noqa: E402
from asr.models.llm import load_llm  # noqa: E402
from asr.models.loading import load_model_dir  # noqa: E402
from asr.training.train_image import load_image_config  # noqa: E402
from evaluation.captions import hard_retrieval  # noqa: E402

POSITION_WORDS = {"left", "right", "top", "bottom", "center"}


def swapped_captions(text: str) -> dict[str, str]:
    """The caption with its two groups' colours, shapes or places exchanged (only kinds that differ)."""
    words = text.split()
    out = {}
    if sum(w in SC.COLOURS for w in words) == 2:
        for t in swapped_captions_of_class(text, [set(SC.COLOURS)]):
            out["colour"] = t
    places = [i for i, w in enumerate(words) if w in POSITION_WORDS and i >= 2]
    if len(places) == 2 and words[places[0]] != words[places[1]]:
        # whole phrases exchanged ("at the top" <-> "on the left"): a likelihood scorer must not win on
        # grammar ("at the left")
        new = list(words)
        a, b = places
        new[a - 2 : a + 1], new[b - 2 : b + 1] = words[b - 2 : b + 1], words[a - 2 : a + 1]
        out["position"] = " ".join(new)
    shapes = [i for i, w in enumerate(words) if w in SC.SHAPES or w in SC.SINGULAR]
    if len(shapes) == 2:
        base = [SC.SINGULAR.get(words[i], words[i]) for i in shapes]
        if base[0] != base[1]:
            new = list(words)
            for i, other in zip(shapes, reversed(base)):  # each slot gets the other shape, in its own number
                new[i] = SC.PLURAL[other] if words[i] in SC.SINGULAR else other
            out["shape"] = " ".join(new)
    return out


SCORERS = ("itc", "itg", "lm")


@torch.no_grad()
def binding_scores(model: ImageCaptionModel, data: CaptionSet, batch_size: int = 32, scorer: str = "itc") -> dict:
    """Per swap kind, the share of pictures whose true caption scores higher than the swapped one. ``scorer``:
    "itc" the contrastive similarity, "itg" the ITG decoder's caption log-likelihood, "lm" the frozen LLM's."""
    rows = []  # (caption index, kind, swapped text)
    for i, text in enumerate(data.texts):
        rows += [(i, kind, swapped) for kind, swapped in swapped_captions(text).items()]
    score: dict[str, list[float]] = {}
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        batch = data.collate([i for i, _, _ in chunk])
        true = [batch["target_ids"][b, : int(batch["target_lengths"][b])].tolist() for b in range(len(chunk))]
        fake = [model.prompt.target_ids(s) for _, _, s in chunk]  # tokenized as training tokenizes captions
        emb = model.image_embeddings(batch["images"].to(model.device))
        sim_true, sim_fake = model.pair_scores(emb, true, scorer), model.pair_scores(emb, fake, scorer)
        for (_, kind, _), a, b in zip(chunk, sim_true.tolist(), sim_fake.tolist()):
            score.setdefault(kind, []).append(1.0 if a > b else 0.5 if a == b else 0.0)
    return {f"binding_{k}": {"captions": len(v), "true_wins": round(sum(v) / len(v), 4)} for k, v in sorted(score.items())}


def model_from_checkpoint(config: str, checkpoint: str) -> ImageCaptionModel:
    """A step checkpoint of an image-stage run, rebuilt with the config that trained it."""
    stage = ImageStageConfig.from_sections(load_image_config(config))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["model"]
    vocab = None
    if stage.itg_weight > 0:  # the ITG decoder's vocabulary: in the checkpoint, or (older runs) in best/ beside it
        if "itg_decoder.vocab" not in state:
            best = Path(checkpoint).resolve().parent.parent / "best"
            try:
                state["itg_decoder.vocab"] = load_weights(best, stem=ITG_HEAD)["itg_decoder.vocab"]
            except FileNotFoundError:
                raise SystemExit(f"{checkpoint}: no ITG vocabulary in it nor in {best}") from None
        vocab = state["itg_decoder.vocab"].tolist()
    model = ImageCaptionModel(stage, load_llm(stage.llm), caption_vocab=vocab)
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = [k for k in missing if k.startswith(("itc_", "itg_", "x2l."))]
    if head or unexpected:
        raise SystemExit(f"{checkpoint} does not fit {config}: missing {head[:5]}, unexpected {unexpected[:5]}")
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--model-dir", help="an image-stage model dir (exp/<tag>/final or best)")
    source.add_argument("--checkpoint", help="a training checkpoint (exp/<tag>/checkpoints/step_*.pt); needs --config")
    ap.add_argument("--config", help="the image-stage YAML the checkpoint was trained with")
    ap.add_argument("--captions", required=True, help="captions dir (images.scp + text)")
    ap.add_argument(
        "--scorer",
        choices=SCORERS,
        default="itc",
        help="itc: contrastive similarity; itg: the ITG decoder's caption likelihood; lm: the frozen LLM's",
    )
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.checkpoint and not args.config:
        ap.error("--checkpoint needs --config (the YAML that trained it)")
    if args.model_dir:
        model = load_model_dir(args.model_dir)
        if not isinstance(model, ImageCaptionModel):
            print(f"{args.model_dir}: a {type(model).__name__} dir, not an image-stage model", file=sys.stderr)
            return 2
    else:
        model = model_from_checkpoint(args.config, args.checkpoint)
    weight = {"itc": model.config.contrastive_weight, "itg": model.config.itg_weight, "lm": model.config.caption_weight}
    if weight[args.scorer] <= 0:
        print(
            f"{args.model_dir or args.config}: the run had no {args.scorer} loss (its weight is 0): nothing to score",
            file=sys.stderr,
        )
        return 2
    data = CaptionSet(args.captions, model.prompt, size=model.x2l.picture_size())
    extra = hard_retrieval(model, data) if args.scorer == "itc" else {}
    print(json.dumps({"scorer": args.scorer, **binding_scores(model, data, scorer=args.scorer), **extra}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
