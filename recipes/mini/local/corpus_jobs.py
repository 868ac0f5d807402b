"""Bookkeeping of a synthesized corpus, shared by recipes/mini and recipes/mini_vis: seeds that follow
a key (not the run), plan files that say which outputs a rerun must remake, and a pool of processes
that runs the synthesis jobs with a progress bar.

A rerun makes only what is missing: each output has a signature (what it is made from), recorded in
a plan file; an output whose signature changed since the last run is removed, so it is made again.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from asr.io_utils import write_text_atomic


def stable_int(key: str) -> int:
    """A 32-bit number of ``key``, the same in every process and run (Python's hash() is salted)."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:4], "big")


def short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def write_if_changed(path: Path, content: str) -> None:
    """Rewrite ``path`` (atomically) only when its content changes: unchanged files keep their times."""
    if not path.exists() or path.read_text(encoding="utf-8") != content:
        write_text_atomic(path, content)


def sync_plan(plan_file: Path, entries: list[tuple[str, Path, str, str]], sidecars: tuple[str, ...] = ()) -> int:
    """Remove the outputs whose signature changed since the last run, then record the new plan.

    ``entries``: (key, output path, fields, signature) per output; the plan file has a line
    ``key<TAB>fields`` each, ``fields`` ending with the signature. ``sidecars``: suffixes of files
    made beside an output (e.g. ".json"), removed with it. Returns the number of outputs removed."""
    old = {}
    if plan_file.exists():
        for line in plan_file.read_text(encoding="utf-8").splitlines():
            key, _, fields = line.partition("\t")
            old[key] = fields.rsplit("\t", 1)[-1]
    removed = 0
    for key, path, _, signature in entries:
        if key in old and old[key] != signature and path.exists():
            path.unlink()
            for suffix in sidecars:
                path.with_suffix(suffix).unlink(missing_ok=True)
            removed += 1
    write_if_changed(plan_file, "".join(f"{key}\t{fields}\n" for key, _, fields, _ in entries))
    return removed


def worker_dir(tmp_root: str | Path, limit_threads: Callable[[], None]) -> Path:
    """A synthesis process's own temp folder; its libraries held to one thread each (the pool is the
    parallelism)."""
    import torch

    limit_threads()
    torch.set_num_threads(1)
    tmp = Path(tmp_root) / f"w{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    return tmp


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the TTS engines it ran)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_pool(
    jobs: list[dict],
    nj: int,
    run: Callable[[dict], list[dict]],
    init: Callable,
    init_args: tuple,
    total: int,
    desc: str,
    chunksize: int = 1,
) -> list[dict]:
    """``run(job)`` for every job on ``nj`` forked processes (each set up by ``init(*init_args)``), with
    a progress bar over ``total`` utterances; returns every job's results (a list of dicts each)."""
    results: list[dict] = []
    if not jobs:
        return results
    with tqdm(total=total, desc=desc, unit="utt", file=sys.stderr, mininterval=2.0) as bar:
        if nj <= 1:
            init(*init_args)
            outputs = map(run, jobs)
            for res in outputs:
                results.extend(res)
                bar.update(len(res))
        else:
            with mp.get_context("fork").Pool(nj, initializer=init, initargs=init_args) as pool:
                for res in pool.imap_unordered(run, jobs, chunksize=chunksize):
                    results.extend(res)
                    bar.update(len(res))
    return results
