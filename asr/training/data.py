"""Training data: features from feats.scp, token targets from text, batches bounded by total frames.

Batches are formed once from utterances sorted by length (so little padding), then the batch order
is shuffled per epoch with ``seed + epoch``: the order of any epoch can be recomputed exactly,
which is what makes resuming in the middle of an epoch exact.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
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
    """Batches whose padded size (batch size x longest utterance) stays under ``max_frames``."""

    def __init__(self, lengths: list[int], max_frames: int, shuffle: bool = True, seed: int = 0, max_batch_size: int = 256):
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        self.batches: list[list[int]] = []
        batch: list[int] = []
        for i in order:
            longest = max(lengths[i], max((lengths[j] for j in batch), default=0))
            if batch and (longest * (len(batch) + 1) > max_frames or len(batch) >= max_batch_size):
                self.batches.append(batch)
                batch = []
            batch.append(i)
        if batch:
            self.batches.append(batch)
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def epoch_order(self) -> list[list[int]]:
        if not self.shuffle:
            return list(self.batches)
        batches = list(self.batches)
        random.Random(self.seed + self.epoch).shuffle(batches)
        return batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.epoch_order())


def dataset_and_batches(dump_dir: str | Path, units: Tokenizer, frame_divisor: int, max_frames: int,
                        max_batch_size: int, preload: bool, shuffle: bool, seed: int = 0) -> tuple[FeatureDataset, FrameBatchSampler]:
    """The usable utterances of a dump dir and their frame-bounded batches."""
    dataset = FeatureDataset(dump_dir, units, frame_divisor=frame_divisor, preload=preload)
    sampler = FrameBatchSampler([u.num_frames for u in dataset.utts], max_frames, shuffle=shuffle, seed=seed,
                                max_batch_size=max_batch_size)
    return dataset, sampler
