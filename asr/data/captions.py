"""Captions dirs for the image stage: pictures and captions in memory (:class:`CaptionSet`), word-swap
negatives, and batch samplers (plain, or groups of captions one word apart: hard negatives).

A captions dir holds ``images.scp`` (caption id -> picture path) and ``text`` (caption id -> caption),
Kaldi-style tables sorted by id; optionally ``word_classes`` (class name -> its words).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from asr.config import dataclass_from_dict
from asr.data.batching import pad_targets
from asr.data.datadir import DataDirError, read_table
from asr.data.image import read_image


class TargetPrompt(Protocol):
    """What a captions set needs of a prompt: a caption's target token ids (``asr.models.speech_llm.Prompt``)."""

    def target_ids(self, text: str) -> list[int]: ...


@dataclass
class BatchingConfig:
    """How training captions are batched (section ``batching``)."""

    hard_negative_share: float = 0.0  # share of a batch's anchor captions that bring one-word neighbours
    group_size: int = 4  # an anchor + up to group_size - 1 captions of other pictures one word away from it

    def __post_init__(self):
        if not 0 <= self.hard_negative_share <= 1 or self.group_size < 2:
            raise ValueError(
                f"batching: hard_negative_share must be in [0, 1] and group_size >= 2 "
                f"(got {self.hard_negative_share}, {self.group_size})"
            )

    @classmethod
    def from_dict(cls, d: dict | None) -> BatchingConfig:
        return dataclass_from_dict(cls, d, "batching config")


# ---- captions -------------------------------------------------------------------------------------
class CaptionSet:
    """A captions dir in memory: every distinct picture once (uint8), captions as LLM target ids."""

    def __init__(
        self, captions_dir: str | Path, prompt: TargetPrompt, swap_negatives: int = 0, size: int | tuple[int, int] | None = None
    ):
        """``swap_negatives`` > 0: the dir's ``word_classes`` table (class name -> its words, e.g.
        ``colour red green blue``) makes, per caption, up to that many captions with two different words
        of one class exchanged ("two red stars and one blue cross" -> "two blue stars and one red
        cross"): the same words in another binding, negatives that only the picture tells apart
        (NegCLIP's word-order negatives); :meth:`collate` adds them as ``negative_ids``. ``size``: pictures
        are resized to it where they differ (the image encoder's :meth:`ImageX2L.picture_size`)."""
        captions_dir = Path(captions_dir)
        try:
            scp = read_table(captions_dir / "images.scp")
            text = read_table(captions_dir / "text")
        except DataDirError as exc:
            raise ValueError(f"captions dir {captions_dir}: {exc}") from None
        missing = [k for k in scp if k not in text]
        if missing or len(text) != len(scp):
            raise ValueError(
                f"captions dir {captions_dir}: images.scp and text name different ids "
                f"(e.g. {(missing or sorted(set(text) - set(scp)))[0]!r})"
            )
        self.ids = list(scp)
        paths = sorted(set(scp.values()))
        index = {p: i for i, p in enumerate(paths)}
        arrays = []
        for p in paths:
            try:
                arrays.append(read_image(p, size))
            except (OSError, ValueError) as exc:
                line = next(n for n, v in enumerate(scp.values(), 1) if v == p)
                raise ValueError(f"{captions_dir / 'images.scp'}:{line}: cannot read picture {p}: {exc}") from None
            if arrays[-1].shape != arrays[0].shape:
                raise ValueError(
                    f"{captions_dir / 'images.scp'}: picture {p} is {arrays[-1].shape[1:]}, "
                    f"{paths[0]} is {arrays[0].shape[1:]}: all pictures must have one size"
                )
        self.images = torch.from_numpy(np.stack(arrays))  # (P, 3, H, W) uint8
        self.image_of = [index[scp[k]] for k in self.ids]
        self.texts = [text[k] for k in self.ids]
        self.targets = [prompt.target_ids(t) for t in self.texts]
        self.negatives: list[list[list[int]]] = []
        if swap_negatives > 0:
            classes_file = captions_dir / "word_classes"
            if not classes_file.is_file():
                raise ValueError(
                    f"captions dir {captions_dir}: loss.swap_negatives needs {classes_file} (lines '<class> <word> <word> ...')"
                )
            classes = [set(words.split()) for words in read_table(classes_file).values()]
            self.negatives = [[prompt.target_ids(v) for v in swapped_captions(t, classes)[:swap_negatives]] for t in self.texts]

    def __len__(self) -> int:
        return len(self.ids)

    def pictures(self, indices: list[int]) -> torch.Tensor:
        return self.images[[self.image_of[i] for i in indices]].float() / 255.0  # (B, 3, H, W)

    def collate(self, indices: list[int]) -> dict:
        batch = {
            "utt_ids": [self.ids[i] for i in indices],
            "images": self.pictures(indices),
            "picture_ids": torch.tensor([self.image_of[i] for i in indices]),
            **pad_targets([self.targets[i] for i in indices]),
        }
        negatives = [n for i in indices for n in self.negatives[i]] if self.negatives else []
        if negatives:
            padded = pad_targets(negatives)
            batch.update(negative_ids=padded["target_ids"], negative_lengths=padded["target_lengths"])
        return batch


def swapped_captions(text: str, classes: list[set[str]]) -> list[str]:
    """``text`` with two different words of one class exchanged, every such pair (class by class, left to
    right; each distinct result once, never ``text`` itself)."""
    words = text.split()
    out: dict[str, None] = {}
    for vocab in classes:
        where = [i for i, w in enumerate(words) if w in vocab]
        for a, i in enumerate(where):
            for j in where[a + 1 :]:
                if words[i] != words[j]:
                    new = list(words)
                    new[i], new[j] = new[j], new[i]
                    out.setdefault(" ".join(new))
    out.pop(text, None)
    return list(out)


class FixedBatchSampler:
    """Batches of ``batch_size`` captions (the Trainer's sampler interface), reshuffled every epoch."""

    def __init__(self, n: int, batch_size: int, shuffle: bool = True, seed: int = 0):
        if n == 0:
            raise ValueError("no captions to batch")
        self.n, self.batch_size, self.shuffle, self.seed, self.epoch = n, max(1, batch_size), shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[list[int]]:
        order = list(range(self.n))
        if self.shuffle:
            random.Random(self.seed + self.epoch).shuffle(order)
        return [order[i : i + self.batch_size] for i in range(0, self.n, self.batch_size)]

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        return iter(self.epoch_order())


class OneWordNeighbours:
    """Which captions differ from a given one in exactly one word (same length, one word replaced).

    Such a caption of another picture is a hard negative for the contrastive loss: in a random batch a
    caption is told from the others by any of its words (colour and position usually suffice); next to
    "two red stars on the left", "two red crosses on the left" is told apart only by the shapes.
    Captions are bucketed by (length, position, the words around it); a bucket holds one caption's
    neighbours at that position (and captions with its own text, which :meth:`pick` skips).
    """

    def __init__(self, texts: list[str], image_of: list[int]):
        self.texts, self.image_of = texts, image_of
        bucket_ids: dict[tuple, int] = {}
        self.members: list[list[int]] = []
        self.buckets: list[list[int]] = []  # caption -> its buckets
        for i, text in enumerate(texts):
            words = text.split()
            mine = []
            for j in range(len(words)):
                key = (len(words), j, " ".join(words[:j]), " ".join(words[j + 1 :]))
                b = bucket_ids.setdefault(key, len(bucket_ids))
                if b == len(self.members):
                    self.members.append([])
                self.members[b].append(i)
                mine.append(b)
            self.buckets.append(mine)

    def pick(
        self, i: int, rng: random.Random, taken_texts: set[str], taken_pictures: set[int], free: bytearray, tries: int = 8
    ) -> int | None:
        """A free caption one word away from caption ``i``, of a picture and with a text not taken yet."""
        buckets = [b for b in self.buckets[i] if len(self.members[b]) > 1]
        rng.shuffle(buckets)
        for b in buckets:
            members = self.members[b]
            for _ in range(tries):
                j = members[rng.randrange(len(members))]
                if free[j] and self.texts[j] not in taken_texts and self.image_of[j] not in taken_pictures:
                    return j
        return None


class HardNegativeBatchSampler(FixedBatchSampler):
    """Batches of ``batch_size`` captions in which a share of the anchors come with one-word neighbours.

    Every epoch: the captions in shuffled order are anchors; with probability ``share`` an anchor
    brings up to ``group_size - 1`` free captions of other pictures that differ from it in one word
    (:class:`OneWordNeighbours`); groups fill the batches in order. Each caption is used once per epoch,
    as with :class:`FixedBatchSampler`.
    """

    def __init__(
        self,
        texts: list[str],
        image_of: list[int],
        batch_size: int,
        share: float,
        group_size: int = 4,
        shuffle: bool = True,
        seed: int = 0,
    ):
        super().__init__(len(texts), batch_size, shuffle, seed)
        self.neighbours = OneWordNeighbours(texts, image_of)
        self.share, self.group_size = share, group_size
        self._cached: tuple[int, list[list[int]]] | None = None

    def __len__(self) -> int:
        return len(self.epoch_order())

    def epoch_order(self) -> list[list[int]]:
        if self._cached is not None and self._cached[0] == self.epoch:
            return self._cached[1]
        rng = random.Random(self.seed + self.epoch)
        order = list(range(self.n))
        if self.shuffle:
            rng.shuffle(order)
        free = bytearray(b"\x01") * self.n
        texts, image_of = self.neighbours.texts, self.neighbours.image_of
        batches, batch = [], []
        for a in order:
            if not free[a]:
                continue
            free[a] = 0
            group = [a]
            if rng.random() < self.share:
                taken_texts, taken_pictures = {texts[a]}, {image_of[a]}
                while len(group) < min(self.group_size, self.batch_size - len(batch)):
                    j = self.neighbours.pick(a, rng, taken_texts, taken_pictures, free)
                    if j is None:
                        break
                    free[j] = 0
                    group.append(j)
                    taken_texts.add(texts[j])
                    taken_pictures.add(image_of[j])
            batch += group
            if len(batch) >= self.batch_size:
                batches.append(batch)
                batch = []
        if batch:
            batches.append(batch)
        self._cached = (self.epoch, batches)
        return batches


def make_sampler(
    data: CaptionSet, batch_size: int, batching: BatchingConfig, shuffle: bool = True, seed: int = 0
) -> FixedBatchSampler:
    if batching.hard_negative_share > 0:
        return HardNegativeBatchSampler(
            data.texts, data.image_of, batch_size, batching.hard_negative_share, batching.group_size, shuffle=shuffle, seed=seed
        )
    return FixedBatchSampler(len(data), batch_size, shuffle=shuffle, seed=seed)
