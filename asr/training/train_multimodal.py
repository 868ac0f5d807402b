"""X-LLM stage 3: speech + image instruction training, mixed with speech-only ASR and captioning.

    python -m asr.training.train_multimodal --config conf/joint_quick.yaml \\
        --speech-llm ../mini/exp/<stage 1>/<stage 2>/final --image-model exp/image_smollm2_quick/final \\
        --joint-dir dump/whisper_encoder_packaged_pool1/train --speech-dirs dump/whisper_encoder_packaged_pool1/train ../mini/dump/whisper_encoder_packaged_pool1/train \\
        --captions data/captions --valid-dir dump/whisper_encoder_packaged_pool1/dev --exp-dir exp/joint_quick

Starts from a stage-2 speech LLM (its frozen stage-1 model, S-Adapter, LoRA) and an image-stage
interface (frozen encoder, Q-Former, I-Adapter) aligned to the same LLM. Every step is one batch of
one kind, drawn with the ``mix`` weights from three sources:

    joint    dump dirs with ``utt2image`` (utterance -> PNG): the joint prompt, picture + speech
    joint_no_picture  the same utterances with the stage-2 prompt and no picture (weight 0: off)
    speech   dump dirs: the stage-2 prompt, speech only (so nothing of stage 2 is lost, and the
             no-image baseline has seen the same speech as the joint prompt)
    caption  a captions dir (images.scp + text): the image stage's prompt

Batch order: per epoch, ``steps_per_epoch`` draws of a source with ``seed + epoch``; each source
walks through its own shuffled batches and starts over when they run out. The whole order is a
function of the seed and the epoch, so resuming in the middle of an epoch is exact.

Config (YAML), sections: ``multimodal`` (:class:`MultimodalConfig`), ``mix`` (``joint``,
``speech``, ``caption`` weights, ``steps_per_epoch``, ``caption_batch_size``), ``train``
(:class:`TrainConfig`), ``decode`` (read by the recipe). ``final/`` holds ``multimodal.json``,
``image_x2l/`` and ``speech_llm/`` (loadable on its own as a stage-2 model).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from asr.config import dataclass_from_dict, load_config
from asr.data.batching import FrameBatchSampler, pad_targets
from asr.data.captions import CaptionSet, FixedBatchSampler
from asr.data.image import PictureTable
from asr.io_utils import read_model_config
from asr.models.caption import KIND as IMAGE_CAPTION
from asr.models.caption import STAGE_CONFIG_NAME
from asr.models.image_x2l import ImageX2L
from asr.models.loading import dir_kind, load_speech_llm
from asr.models.multimodal_llm import CAPTION, JOINT, SPEECH, MultimodalConfig, MultimodalLlm
from asr.models.speech_llm import PromptConfig, stage1_dir_of
from asr.training.data import Batches, FeatureDataset
from asr.training.stage import StageParts, run_stage, train_config
from asr.training.trainer import run_entry_point

log = logging.getLogger(__name__)
SECTIONS = ("multimodal", "mix", "train", "decode")


@dataclass
class MixConfig:
    joint: float = 0.5
    joint_no_picture: float = 0.0  # the joint dirs' utterances again with the stage-2 prompt and no picture:
    #                                the no-picture baseline then sees the same speech as often as the joint prompt
    speech: float = 0.3
    caption: float = 0.2
    steps_per_epoch: int = 500
    caption_batch_size: int = 8

    def __post_init__(self):
        if min(self.joint, self.joint_no_picture, self.speech, self.caption) < 0 or self.joint <= 0:
            raise ValueError(
                f"mix weights must be >= 0 and joint > 0 (joint {self.joint}, joint_no_picture "
                f"{self.joint_no_picture}, speech {self.speech}, caption {self.caption})"
            )


# ---- data -------------------------------------------------------------------------------------
class SpeechSet:
    """The usable utterances of one or more dump dirs with LLM targets; ``with_pictures``: each utterance's
    picture from its dir's ``utt2image`` too (utterances without one are left out, with a logged count).
    With several dirs, utterance ids become ``<dir index>:<id>``."""

    def __init__(
        self,
        dump_dirs: list[str | Path],
        units,
        model: MultimodalLlm,
        frame_divisor: int,
        preload: bool,
        with_pictures: bool = False,
    ):
        parts = [FeatureDataset(d, units, frame_divisor=frame_divisor, preload=preload) for d in dump_dirs]
        size = model.x2l.picture_size()
        tables = [PictureTable(Path(d) / "utt2image", size) for d in dump_dirs] if with_pictures else []
        self.data = FeatureDataset.merge(parts)  # several dirs: ids "<dir index>:<utt>" (corpora may share ids)
        if len(parts) > 1:
            for k, table in enumerate(tables):
                table.index_of = {f"{k}:{utt}": i for utt, i in table.index_of.items()}
        self.pictures = None
        if with_pictures:
            self.pictures = PictureTable.merge(tables)
            before = len(self.data.utts)
            self.data.utts = [u for u in self.data.utts if u.utt_id in self.pictures.index_of]
            if len(self.data.utts) < before:
                log.warning("%s: %d utterance(s) have no picture in utt2image: left out", dump_dirs, before - len(self.data.utts))
            if not self.data.utts:
                raise ValueError(f"{dump_dirs}: no utterance has a picture in utt2image")
        self.kind = JOINT if with_pictures else SPEECH
        self.targets = [model.prompt.target_ids(u.text) for u in self.data.utts]

    def __len__(self) -> int:
        return len(self.data.utts)

    def lengths(self) -> list[int]:
        return [u.num_frames for u in self.data.utts]

    def collate(self, indices: list[int]) -> dict:
        batch = self.data.collate(indices)
        out = {
            "utt_ids": batch["utt_ids"],
            "feats": batch["feats"],
            "feat_lengths": batch["feat_lengths"],
            "kind": torch.tensor(self.kind),
            **pad_targets([self.targets[i] for i in indices]),
        }
        if self.pictures is not None:
            out["images"] = self.pictures.pictures(batch["utt_ids"])
        return out


class Source:
    """One data source of the mix: its collate, its batch sampler, its weight, its index offset."""

    def __init__(self, name: str, collate, sampler, weight: float):
        self.name, self.collate, self.sampler, self.weight, self.offset = name, collate, sampler, weight, 0


class MixedBatchSampler:
    """``steps_per_epoch`` batches per epoch, each from one source drawn by weight (the Trainer's sampler
    interface). Batches hold global indices (source offset + index), so one collate serves all."""

    def __init__(self, sources: list[Source], steps_per_epoch: int, seed: int = 0):
        self.sources = [s for s in sources if s.weight > 0]
        offset = 0
        for s in self.sources:
            s.offset, offset = offset, offset + 10**9  # far apart: the source of an index is index // 10**9
        self.steps, self.seed, self.epoch = steps_per_epoch, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[list[int]]:
        rng = random.Random(self.seed + self.epoch)
        picks = rng.choices(range(len(self.sources)), weights=[s.weight for s in self.sources], k=self.steps)
        walks: dict[int, list[list[int]]] = {}
        passes: dict[int, int] = {}
        out = []
        for k in picks:
            if not walks.get(k):  # this source's next pass over its batches
                src = self.sources[k]
                src.sampler.set_epoch(self.epoch * 1000 + passes.get(k, 0))
                passes[k] = passes.get(k, 0) + 1
                walks[k] = list(reversed(src.sampler.epoch_order()))
            out.append([self.sources[k].offset + i for i in walks[k].pop()])
        return out

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return iter(self.epoch_order())

    def collate(self, indices: list[int]) -> dict:
        src = self.sources[indices[0] // 10**9]
        return src.collate([i - src.offset for i in indices])


# ---- model ------------------------------------------------------------------------------------
def build_multimodal(
    config: MultimodalConfig, speech_llm_dir: str | Path, image_dir: str | Path, device: str | None = None
) -> MultimodalLlm:
    """A stage-2 speech LLM + an image-stage interface -> the stage-3 model (checks they share an LLM)."""
    speech_llm_dir, image_dir = Path(speech_llm_dir), Path(image_dir)
    speech = load_speech_llm(speech_llm_dir, device=device)
    kind = dir_kind(image_dir)
    if kind != IMAGE_CAPTION:
        raise ValueError(f"{image_dir}: a {kind} dir; --image-model must be an image-stage final/ dir ({IMAGE_CAPTION})")
    image_stage = read_model_config(image_dir / STAGE_CONFIG_NAME, IMAGE_CAPTION)  # without loading its LLM
    if image_stage["llm"]["name_or_path"] != speech.config.llm.name_or_path:
        raise ValueError(
            f"the image interface was aligned to {image_stage['llm']['name_or_path']!r}, the speech LLM "
            f"uses {speech.config.llm.name_or_path!r}: stage 3 needs both on one LLM"
        )
    image = ImageX2L.from_pretrained(image_dir, freeze_encoder=True)
    return MultimodalLlm(
        config, speech, image, PromptConfig(**image_stage["prompt"]), stage1_dir=stage1_dir_of(speech_llm_dir).resolve()
    )


def load_joint_config(path: str | Path) -> tuple[dict, MultimodalConfig, MixConfig]:
    """Stage 3's YAML: its sections, the multimodal and mix settings; errors name the file."""
    cfg = load_config(path, sections=SECTIONS)
    try:
        return (
            cfg,
            MultimodalConfig.from_dict(cfg.get("multimodal")),
            dataclass_from_dict(MixConfig, cfg.get("mix"), "mix config"),
        )
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def train(
    config_path: str | Path,
    speech_llm_dir: str | Path,
    image_dir: str | Path,
    joint_dirs: list[str],
    speech_dirs: list[str],
    captions: str | Path | None,
    valid_dir: str | Path | None,
    exp_dir: str | Path,
    overrides: dict | None = None,
) -> Path:
    cfg, mm_cfg, mix = load_joint_config(config_path)
    train_cfg = train_config(cfg, overrides, config_path)

    def build(device) -> StageParts:
        model = build_multimodal(mm_cfg, speech_llm_dir, image_dir, device=str(device))
        sampler, sizes = mixed_batches(model, mix, train_cfg, joint_dirs, speech_dirs, captions)
        valid_fn = None
        if valid_dir is not None:
            valid = SpeechSet(
                [valid_dir],
                model.speech.stage1_units(),
                model,
                model.speech.stage1.frame_rate_divisor,
                train_cfg.preload,
                with_pictures=True,
            )
            valid_batches = FrameBatchSampler(
                valid.lengths(), train_cfg.max_frames_per_batch, shuffle=False, max_batch_size=train_cfg.max_batch_size
            )
            valid_fn = lambda: Batches(list(valid_batches), valid.collate)  # noqa: E731
        trainable = model.optimizer_groups()
        log.info(
            "stage 3: %.2fM trainable parameters (LoRA lr x %g); sources %s, weights %s, %d steps per epoch",
            sum(p.numel() for g in trainable for p in g["params"]) / 1e6,
            mm_cfg.lora_lr_scale,
            sizes,
            {s.name: s.weight for s in sampler.sources},
            len(sampler),
        )
        started_from = {"stage-2 speech LLM": speech_llm_dir, "image model": image_dir}
        return StageParts(model, sampler, sampler.collate, valid_fn, trainable, started_from)

    return run_stage(train_cfg, exp_dir, build)


def mixed_batches(
    model: MultimodalLlm, mix: MixConfig, train_cfg, joint_dirs, speech_dirs, captions
) -> tuple[MixedBatchSampler, dict]:
    """Stage 3's batches: one source per kind (joint speech + picture, the same speech without it,
    speech only, captions), drawn with the mix's weights; and each source's size."""
    units = model.speech.stage1_units()
    divisor = model.speech.stage1.frame_rate_divisor

    def speech_source(name, dirs, weight, with_pictures):
        data = SpeechSet(dirs, units, model, divisor, train_cfg.preload, with_pictures)
        sampler = FrameBatchSampler(
            data.lengths(),
            train_cfg.max_frames_per_batch,
            shuffle=True,
            seed=train_cfg.seed,
            max_batch_size=train_cfg.max_batch_size,
        )
        return Source(name, data.collate, sampler, weight), data

    sources, sizes = [], {}
    src, data = speech_source("joint", joint_dirs, mix.joint, True)
    sources.append(src)
    sizes["joint"] = len(data)
    if mix.joint_no_picture > 0:
        src, data = speech_source("joint_no_picture", joint_dirs, mix.joint_no_picture, False)
        sources.append(src)
        sizes["joint_no_picture"] = len(data)
    if speech_dirs and mix.speech > 0:
        src, data = speech_source("speech", speech_dirs, mix.speech, False)
        sources.append(src)
        sizes["speech"] = len(data)
    if captions is not None and mix.caption > 0:
        caps = CaptionSet(captions, model.caption_prompt, size=model.x2l.picture_size())

        def collate(idx, _c=caps):  # stage 3's caption loss is the LLM's only: no picture ids
            batch = _c.collate(idx)
            del batch["picture_ids"]
            return {**batch, "kind": torch.tensor(CAPTION)}

        sources.append(
            Source("caption", collate, FixedBatchSampler(len(caps), mix.caption_batch_size, seed=train_cfg.seed), mix.caption)
        )
        sizes["caption"] = len(caps)
    return MixedBatchSampler(sources, mix.steps_per_epoch, seed=train_cfg.seed), sizes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m asr.training.train_multimodal", description=__doc__.split("\n")[0])
    p.add_argument("--config", required=True)
    p.add_argument("--speech-llm", required=True, help="stage-2 model dir (final/ of train-llm)")
    p.add_argument("--image-model", required=True, help="image-stage model dir (final/ of train_image)")
    p.add_argument("--joint-dirs", nargs="+", required=True, help="dump dirs with utt2image")
    p.add_argument("--speech-dirs", nargs="*", default=[], help="dump dirs for speech-only batches")
    p.add_argument("--captions", help="captions dir (images.scp, text) for caption batches")
    p.add_argument("--valid-dir", help="dump dir with utt2image for validation")
    p.add_argument("--exp-dir", required=True)
    p.add_argument("--max-steps", type=int)
    args = p.parse_args(argv)
    overrides = {"max_steps": args.max_steps} if args.max_steps is not None else None
    return run_entry_point(
        lambda: train(
            args.config,
            args.speech_llm,
            args.image_model,
            args.joint_dirs,
            args.speech_dirs,
            args.captions,
            args.valid_dir,
            args.exp_dir,
            overrides,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
