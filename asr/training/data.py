"""Training data: features from feats.scp, token targets from text, batches bounded by total frames.

Batches are formed once from utterances sorted by length (so little padding), then the batch order
is shuffled per epoch with ``seed + epoch``: the order of any epoch can be recomputed exactly,
which is what makes resuming in the middle of an epoch exact.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path

import kaldiio
import numpy as np
import torch

from asr.data.datadir import read_table
from asr.models.cif_asr import IGNORE_ID
from asr.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def pad_features(mats: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature matrices (T_i, F) -> padded float32 batch (B, T_max, F) and lengths (B,).

    numpy arrays are copied (kaldiio may hand out read-only ones); tensors are used as they are.
    """
    tensors = [(m if isinstance(m, torch.Tensor) else torch.tensor(np.asarray(m))).float() for m in mats]
    return torch.nn.utils.rnn.pad_sequence(tensors, batch_first=True), torch.tensor([t.shape[0] for t in tensors])


def pad_targets(targets: list[list[int]]) -> dict[str, torch.Tensor]:
    """Token-id lists -> ``target_ids`` (B, L_max) padded with IGNORE_ID and ``target_lengths`` (B,)."""
    lengths = torch.tensor([len(t) for t in targets])
    ids = torch.full((len(targets), int(lengths.max())), IGNORE_ID, dtype=torch.long)
    for b, t in enumerate(targets):
        ids[b, : len(t)] = torch.tensor(t)
    return {"target_ids": ids, "target_lengths": lengths}


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

    def __init__(self, dump_dir: str | Path, tokenizer: Tokenizer, frame_divisor: int = 1,
                 max_frames: int | None = None, preload: bool = False):
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
    def merge(cls, parts: list["FeatureDataset"]) -> "FeatureDataset":
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
        tgt_lengths = torch.tensor([len(u.tokens) for u in utts])
        targets = torch.full((len(utts), int(tgt_lengths.max())), IGNORE_ID, dtype=torch.long)
        for b, u in enumerate(utts):
            targets[b, : len(u.tokens)] = torch.tensor(u.tokens)
        return {"utt_ids": [u.utt_id for u in utts], "feats": feats, "feat_lengths": lengths,
                "targets": targets, "target_lengths": tgt_lengths}


class FrameBatchSampler:
    """Batches whose padded size (batch size x longest utterance) stays under ``max_frames``.

    Default: batches formed once from the length-sorted utterances, their order shuffled per epoch.
    ``bucket_shuffle``: each epoch, the length-sorted utterances are cut into ``num_buckets``
    buckets of equal count, shuffled inside each bucket, batched inside each bucket, and the batches
    shuffled: batch contents change from epoch to epoch at a small padding cost. Either way the order
    of an epoch is a function of ``seed + epoch`` alone, so resuming inside an epoch is exact.
    """

    def __init__(self, lengths: list[int], max_frames: int, shuffle: bool = True, seed: int = 0, max_batch_size: int = 256,
                 bucket_shuffle: bool = False, num_buckets: int = 10):
        if bucket_shuffle and num_buckets < 1:
            raise ValueError(f"num_buckets must be >= 1 (got {num_buckets})")
        self.lengths, self.max_frames, self.max_batch_size = list(lengths), max_frames, max_batch_size
        self.sorted = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches: list[list[int]] = self._batch(self.sorted)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0
        self.bucket_shuffle, self.num_buckets = bucket_shuffle, num_buckets

    def _batch(self, order: list[int]) -> list[list[int]]:
        """Cut ``order`` into consecutive frame-bounded batches."""
        batches: list[list[int]] = []
        batch: list[int] = []
        longest = 0
        for i in order:
            n = max(longest, self.lengths[i])
            if batch and (n * (len(batch) + 1) > self.max_frames or len(batch) >= self.max_batch_size):
                batches.append(batch)
                batch, n = [], self.lengths[i]
            batch.append(i)
            longest = n
        if batch:
            batches.append(batch)
        return batches

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[list[int]]:
        if not self.shuffle:
            return list(self.batches)
        rng = random.Random(self.seed + self.epoch)
        if self.bucket_shuffle:
            n, k = len(self.sorted), min(self.num_buckets, len(self.sorted))
            batches = []
            for b in range(k):
                bucket = self.sorted[b * n // k : (b + 1) * n // k]
                rng.shuffle(bucket)
                batches += self._batch(bucket)
        else:
            batches = list(self.batches)
        rng.shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self.epoch_order()) if self.bucket_shuffle and self.shuffle else len(self.batches)

    def __iter__(self):
        return iter(self.epoch_order())


class Batches:
    """Index batches collated on demand (validation sets); ``shard`` keeps one rank's share."""

    def __init__(self, batches: list[list[int]], collate):
        self.batches, self.collate = list(batches), collate

    def shard(self, rank: int, world_size: int) -> "Batches":
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
                _Collated(collate), sampler=self._sampler, batch_size=None, collate_fn=_identity,
                num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor,
                persistent_workers=True, generator=torch.Generator().manual_seed(0))

    def __call__(self, batches: list[list[int]]):
        if self.loader is None:
            return (self.collate(b) for b in batches)
        self._sampler.items = list(batches)
        return iter(self.loader)


def dataset_and_batches(dump_dir: str | Path, units: Tokenizer, frame_divisor: int, max_frames: int,
                        max_batch_size: int, preload: bool, shuffle: bool, seed: int = 0, bucket_shuffle: bool = False,
                        num_buckets: int = 10) -> tuple[FeatureDataset, FrameBatchSampler]:
    """The usable utterances of a dump dir and their frame-bounded batches."""
    dataset = FeatureDataset(dump_dir, units, frame_divisor=frame_divisor, preload=preload)
    sampler = FrameBatchSampler([u.num_frames for u in dataset.utts], max_frames, shuffle=shuffle, seed=seed,
                                max_batch_size=max_batch_size, bucket_shuffle=bucket_shuffle, num_buckets=num_buckets)
    return dataset, sampler
