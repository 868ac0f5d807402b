"""Training data: features from feats.scp, token targets from text, batches bounded by total frames
(:class:`asr.data.batching.FrameBatchSampler`).

Batches are formed once from utterances sorted by length (so little padding), then the batch order
is shuffled per epoch with ``seed + epoch``: the order of any epoch can be recomputed exactly,
which is what makes resuming in the middle of an epoch exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import kaldiio
import numpy as np
import torch

from asr.data.batching import FrameBatchSampler, pad_features, pad_targets
from asr.data.datadir import read_table
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)


@dataclass
class Utterance:
    utt_id: str
    num_frames: int
    tokens: list[int]
    feats_ref: str  # ark:offset
    text: str


class FeatureDataset:
    """Utterances of a dump dir (feats.scp, utt2num_frames, text) that can be trained on.

    Skipped, with a logged count: utterances without features (bad audio), empty token sequences,
    and utterances with more tokens than encoder frames (CIF cannot fire more often than frames).
    """

    def __init__(
        self,
        dump_dir: str | Path,
        tokenizer: Tokenizer,
        frame_divisor: int = 1,
        max_frames: int | None = None,
        preload: bool = False,
    ):
        dump_dir = Path(dump_dir)
        feats = read_table(dump_dir / "feats.scp")
        num_frames = read_table(dump_dir / "utt2num_frames")
        text = read_table(dump_dir / "text")
        self.utts: list[Utterance] = []
        skipped: dict[str, int] = {}
        for utt, ref in feats.items():
            n = int(num_frames[utt])
            tokens = tokenizer.encode(text.get(utt, ""))
            reason = None
            if not tokens:
                reason = "no transcript tokens"
            elif len(tokens) > n // frame_divisor:
                reason = "more tokens than encoder frames"
            elif max_frames and n > max_frames:
                reason = f"longer than {max_frames} frames"
            if reason:
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            self.utts.append(Utterance(utt, n, tokens, ref, text[utt]))
        for reason, count in skipped.items():
            log.warning("%s: skipped %d utterance(s): %s", dump_dir, count, reason)
        if not self.utts:
            raise ValueError(f"{dump_dir}: no usable utterances (skipped: {skipped})")
        self._cache: dict[str, np.ndarray] | None = None
        if preload:
            loaded = kaldiio.load_scp(str(dump_dir / "feats.scp"))
            self._cache = {u.utt_id: np.asarray(loaded[u.utt_id]) for u in self.utts}

    def __len__(self) -> int:
        return len(self.utts)

    @classmethod
    def merge(cls, parts: list[FeatureDataset]) -> FeatureDataset:
        """One dataset of several dump dirs' utterances, in order. With more than one part the ids
        become ``<part index>:<id>`` (corpora may share utterance ids); each part is left as it was."""
        if len(parts) == 1:
            return parts[0]
        merged = cls.__new__(cls)
        merged.utts, merged._cache = [], {} if all(p._cache is not None for p in parts) else None
        for k, part in enumerate(parts):
            for u in part.utts:
                merged.utts.append(replace(u, utt_id=f"{k}:{u.utt_id}"))
                if merged._cache is not None:
                    merged._cache[f"{k}:{u.utt_id}"] = part._cache[u.utt_id]
        return merged

    def features(self, utt: Utterance) -> np.ndarray:
        if self._cache is not None:
            return self._cache[utt.utt_id]
        return kaldiio.load_mat(utt.feats_ref)

    def collate(self, indices: list[int]) -> dict:
        """Pad a batch: feats (B, T, F) float32, feat_lengths (B,), targets (B, L) with IGNORE_ID."""
        utts = [self.utts[i] for i in indices]
        feats, lengths = pad_features([self.features(u) for u in utts])
        targets = pad_targets([u.tokens for u in utts])
        return {
            "utt_ids": [u.utt_id for u in utts],
            "feats": feats,
            "feat_lengths": lengths,
            "targets": targets["target_ids"],
            "target_lengths": targets["target_lengths"],
        }


class Batches:
    """Index batches collated on demand (validation sets); ``shard`` keeps one rank's share."""

    def __init__(self, batches: list[list[int]], collate):
        self.batches, self.collate = list(batches), collate

    def shard(self, rank: int, world_size: int) -> Batches:
        return Batches(self.batches[rank::world_size], self.collate)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return (self.collate(b) for b in self.batches)


class _Collated(torch.utils.data.Dataset):
    """Map-style dataset whose item for a list of utterance indices is the collated batch."""

    def __init__(self, collate):
        self.collate = collate

    def __getitem__(self, indices):
        return self.collate(indices)


class _Settable(torch.utils.data.Sampler):
    """The index batches of the current pass (set before each ``iter(loader)``; sampling runs in the main process)."""

    def __init__(self):
        self.items: list[list[int]] = []

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def _identity(batch):
    return batch


class BatchLoader:
    """Collated batches for lists of utterance indices, in the order given.

    ``num_workers`` 0: collated in this process when asked for (no prefetch). Otherwise a torch
    DataLoader with that many persistent worker processes reads and collates ahead
    (``prefetch_factor`` batches each); features are then read lazily in the workers when the
    dataset is not preloaded. The batches are the same either way: collation draws no random numbers,
    and the loader's own seed comes from a private generator (the global RNG is left alone, so
    resuming stays exact).
    """

    def __init__(self, collate, num_workers: int = 0, pin_memory: bool = False, prefetch_factor: int = 2):
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0 (got {num_workers})")
        self.collate, self.num_workers = collate, num_workers
        self.loader = None
        if num_workers:
            self._sampler = _Settable()
            self.loader = torch.utils.data.DataLoader(
                _Collated(collate),
                sampler=self._sampler,
                batch_size=None,
                collate_fn=_identity,
                num_workers=num_workers,
                pin_memory=pin_memory,
                prefetch_factor=prefetch_factor,
                persistent_workers=True,
                generator=torch.Generator().manual_seed(0),
            )

    def __call__(self, batches: list[list[int]]):
        if self.loader is None:
            return (self.collate(b) for b in batches)
        self._sampler.items = list(batches)
        return iter(self.loader)


def dataset_and_batches(
    dump_dir: str | Path,
    units: Tokenizer,
    frame_divisor: int,
    max_frames: int,
    max_batch_size: int,
    preload: bool,
    shuffle: bool,
    seed: int = 0,
    bucket_shuffle: bool = False,
    num_buckets: int = 10,
) -> tuple[FeatureDataset, FrameBatchSampler]:
    """The usable utterances of a dump dir and their frame-bounded batches."""
    dataset = FeatureDataset(dump_dir, units, frame_divisor=frame_divisor, preload=preload)
    sampler = FrameBatchSampler(
        [u.num_frames for u in dataset.utts],
        max_frames,
        shuffle=shuffle,
        seed=seed,
        max_batch_size=max_batch_size,
        bucket_shuffle=bucket_shuffle,
        num_buckets=num_buckets,
    )
    return dataset, sampler


def speech_batches(train_dir, valid_dir, units, frame_divisor: int, train_cfg, wrap=None):
    """A stage's training set, its batch sampler (shuffled, frame-bounded) and a validation-batch factory
    (None without ``valid_dir``), as ``train_cfg`` (a TrainConfig) sets them. ``wrap``: turns each
    FeatureDataset into what the stage collates (stage 2: LLM targets)."""
    wrap = wrap or (lambda dataset: dataset)
    batching = dict(
        frame_divisor=frame_divisor,
        max_frames=train_cfg.max_frames_per_batch,
        max_batch_size=train_cfg.max_batch_size,
        preload=train_cfg.preload,
    )
    dataset, sampler = dataset_and_batches(
        train_dir,
        units,
        shuffle=True,
        seed=train_cfg.seed,
        bucket_shuffle=train_cfg.bucket_shuffle,
        num_buckets=train_cfg.num_buckets,
        **batching,
    )
    valid_fn = None
    if valid_dir is not None:
        valid_data, valid_sampler = dataset_and_batches(valid_dir, units, shuffle=False, **batching)
        valid_set = wrap(valid_data)
        valid_fn = lambda: Batches(list(valid_sampler), valid_set.collate)  # noqa: E731
    return wrap(dataset), sampler, valid_fn
