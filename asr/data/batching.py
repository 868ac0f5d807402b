"""Batches of utterances: padding of features and targets, and batches bounded by total frames.

Shared by training and decoding. Batches are formed once from utterances sorted by length (so little
padding), then the batch order is shuffled per epoch with ``seed + epoch``: the order of any epoch
can be recomputed exactly, which is what makes resuming in the middle of an epoch exact.
"""

from __future__ import annotations

import random

import numpy as np
import torch

IGNORE_ID = -100  # target padding: positions with this id are no target (torch's cross_entropy ignore_index)


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


class FrameBatchSampler:
    """Batches whose padded size (batch size x longest utterance) stays under ``max_frames``.

    Default: batches formed once from the length-sorted utterances, their order shuffled per epoch.
    ``bucket_shuffle``: each epoch, the length-sorted utterances are cut into ``num_buckets``
    buckets of equal count, shuffled inside each bucket, batched inside each bucket, and the batches
    shuffled: batch contents change from epoch to epoch at a small padding cost. Either way the order
    of an epoch is a function of ``seed + epoch`` alone, so resuming inside an epoch is exact.
    """

    def __init__(
        self,
        lengths: list[int],
        max_frames: int,
        shuffle: bool = True,
        seed: int = 0,
        max_batch_size: int = 256,
        bucket_shuffle: bool = False,
        num_buckets: int = 10,
    ):
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
