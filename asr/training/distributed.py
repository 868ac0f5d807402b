"""torch.distributed for training: process-group set-up from torchrun's environment, rank helpers,
and the batch sampler that splits each epoch's batches between ranks.

Launched by ``torchrun`` (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``
in the environment), :func:`init_distributed` joins the process group: NCCL when training on CUDA,
gloo otherwise, and pins each process to GPU ``LOCAL_RANK``. Without torchrun (or with
``WORLD_SIZE=1``) everything here is a no-op and training runs as one process.

How the data is split (:class:`DistributedBatchSampler`): every rank computes the same global batch
order of the epoch (from ``seed + epoch``), pads it to a multiple of the world size with batches
from its start, and takes every ``world_size``-th batch from its rank on. One optimizer step uses
``world_size x accum_grad`` global batches; the trainer's ``batch_in_epoch`` counts global batches,
so a checkpoint names the same position whatever the number of ranks that wrote it.
"""

from __future__ import annotations

import datetime
import logging
import os

import torch
import torch.distributed as dist

from asr.device import resolve_device

log = logging.getLogger(__name__)

_DEVICE: torch.device | None = None  # the device init_distributed picked for this process


def launched_by_torchrun() -> bool:
    """Whether the environment describes a multi-process job (torchrun sets WORLD_SIZE and RANK)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> torch.device:
    """Join the process group when launched by torchrun (idempotent); return this process's device.

    Backend: NCCL when the device is a GPU, gloo on CPU. A single process (no torchrun) gets no
    process group and the device alone.
    """
    global _DEVICE
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if launched_by_torchrun() and not is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            if key not in os.environ:
                raise RuntimeError(
                    f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {key} is not set: launch with torchrun (see docs/distributed.md)"
                )
        dist.init_process_group(
            backend, timeout=datetime.timedelta(minutes=timeout_minutes), **({"device_id": dev} if dev.type == "cuda" else {})
        )
        log.info("rank %d of %d (local rank %d), backend %s, device %s", rank(), world_size(), local_rank(), backend, dev)
        if rank() != 0:  # rank 0 reports; the others only warn
            logging.getLogger("asr").setLevel(logging.WARNING)
    _DEVICE = dev
    return dev


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes logs, checkpoints and model dirs. Outside a
    process group (before joining, after leaving) torchrun's ``RANK`` decides."""
    return rank() == 0 if is_initialized() else int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if is_initialized():
        if dist.get_backend() == "nccl":
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def _collective_device() -> torch.device:
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_mean(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over ranks (the same dict on every rank); identity for one process."""
    if not is_initialized() or not values:
        return dict(values)
    keys = list(values)  # the same order on every rank (model outputs are built the same way)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    t /= world_size()
    return dict(zip(keys, t.tolist()))


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """The sum of each value over ranks. Every rank must pass the same keys."""
    if not is_initialized() or not values:
        return dict(values)
    keys = list(values)  # the same order on every rank (model outputs are built the same way)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def all_gather_object(obj) -> list:
    """``obj`` of every rank, in rank order (``[obj]`` for one process)."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup() -> None:
    if is_initialized():
        dist.destroy_process_group()


class DistributedBatchSampler:
    """One rank's share of a batch sampler's epoch (``set_epoch`` / ``epoch_order`` like FrameBatchSampler).

    The global order is the wrapped sampler's, identical on every rank; what is left of it from the
    resume point is padded to a multiple of ``num_replicas`` by repeating batches from the epoch's
    start (``pad=True``, as torch's DistributedSampler does) or cut to one (``pad=False``), so every
    rank runs the same number of steps. Rank r takes global batches ``start + r, start + r + W, ...``;
    ``start`` may be any position, so a checkpoint written by W ranks can be continued by W'.
    """

    def __init__(self, batch_sampler, num_replicas: int | None = None, rank_: int | None = None, pad: bool = True):
        self.sampler = batch_sampler
        self.num_replicas = num_replicas if num_replicas is not None else world_size()
        self.rank = rank_ if rank_ is not None else rank()
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside world size {self.num_replicas}")
        self.pad = pad

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def epoch_order(self) -> list[list[int]]:
        """The global batch order of the epoch (the wrapped sampler's, unpadded)."""
        return list(self.sampler.epoch_order())

    def local_batches(self, start: int = 0) -> list[list[int]]:
        """This rank's batches of the epoch from global batch ``start`` on: ``start + rank``,
        ``start + rank + W``, ... of the remaining order, padded (with batches from the epoch's
        start) or cut to a multiple of the world size W."""
        order = self.epoch_order()
        rest, W = order[start:], self.num_replicas
        odd = len(rest) % W
        if odd and self.pad:
            rest = rest + [order[i % len(order)] for i in range(W - odd)]
        elif odd:
            rest = rest[: len(rest) - odd]
        return rest[self.rank :: W]

    def __len__(self) -> int:
        return len(self.local_batches())

    def __iter__(self):
        return iter(self.local_batches())
