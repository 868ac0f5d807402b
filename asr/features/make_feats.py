"""Feature extraction for a Kaldi data dir into ark/scp, in ``nj`` parallel jobs, resumable.

Output layout (ESPnet's ``dump/`` style), for ``out_dir``:
    out_dir/{wav.scp,text,utt2spk,spk2utt[,segments]}   copies of the source data dir
    out_dir/data/feats.JOB.{ark,scp}                     one archive per job (renamed when complete)
    out_dir/feats.scp, utt2num_frames                    merged, sorted; only utterances that succeeded
    out_dir/bad_utts                                     ``utt reason`` for audio that failed or was empty
    out_dir/feat_info.json                               feature type, options, dim and frame rate

A job whose archive already exists is skipped, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import shutil
from pathlib import Path

import kaldiio
import torch
from tqdm import tqdm

from asr.data.audio import AudioError, utterance_audio
from asr.data.datadir import DataDir, read_table, validate_data_dir
from asr.features.extractors import build_extractor
from asr.io_utils import write_table, write_text_atomic

log = logging.getLogger(__name__)


def _split(items: list[str], n: int) -> list[list[str]]:
    n = max(1, min(n, len(items)))
    size, rem = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < rem else 0)
        out.append(items[start:end])
        start = end
    return out


def _run_job(args: tuple) -> tuple[int, list[tuple[str, str]]]:
    # one thread per job; restored afterwards because with nj=1 the job runs in the caller's process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _extract_job(*args)
    finally:
        torch.set_num_threads(threads)


def _finished_job(job: int, utts: list[str], out_dir: Path) -> list[tuple[str, str]] | None:
    """The bad-utterance list of a job finished in an earlier run over the same utterances, else None."""
    data = out_dir / "data"
    scp, bad_path, frames_path = data / f"feats.{job}.scp", data / f"bad.{job}", data / f"utt2num_frames.{job}"
    if not (scp.exists() and bad_path.exists() and frames_path.exists()):
        return None
    old_bad = [tuple(line.split(" ", 1)) for line in bad_path.read_text().splitlines() if line]
    if set(read_table(frames_path)) | {u for u, _ in old_bad} != set(utts):
        return None
    return old_bad


def _extract_job(
    job, utts, data_path, out_dir, feature_type, options, min_frames, show_progress
) -> tuple[int, list[tuple[str, str]]]:
    out_dir = Path(out_dir)
    ark = out_dir / "data" / f"feats.{job}.ark"
    scp = out_dir / "data" / f"feats.{job}.scp"
    bad_path = out_dir / "data" / f"bad.{job}"
    frames_path = out_dir / "data" / f"utt2num_frames.{job}"
    data = DataDir.read(data_path, validate=False)
    extractor = build_extractor(feature_type, options)
    tmp_ark, tmp_scp = ark.with_suffix(".ark.tmp"), scp.with_suffix(".scp.tmp")
    bad: list[tuple[str, str]] = []
    num_frames: dict[str, str] = {}
    cache: dict = {}
    with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
        for utt in tqdm(utts, desc=f"feats job {job}", disable=not show_progress, mininterval=5):
            try:
                wave = utterance_audio(data, utt, cache)
                feats = extractor(wave)
            except (AudioError, RuntimeError, ValueError) as exc:
                bad.append((utt, str(exc).replace("\n", " ")))
                continue
            if feats.shape[0] < min_frames:
                bad.append((utt, f"only {feats.shape[0]} frames (< {min_frames}): audio too short or empty"))
                continue
            writer(utt, feats)
            num_frames[utt] = str(feats.shape[0])
    # scp lines point at the temp archive name: rewrite them to the final name, then rename both
    lines = tmp_scp.read_text().replace(str(tmp_ark), str(ark))
    tmp_ark.replace(ark)
    write_text_atomic(scp, lines)
    tmp_scp.unlink()
    write_table(frames_path, num_frames)
    write_text_atomic(bad_path, "".join(f"{u} {r}\n" for u, r in bad))
    return job, bad


def make_features(
    data_dir: str | Path,
    out_dir: str | Path,
    feature_type: str = "fbank",
    options: dict | None = None,
    nj: int = 1,
    min_frames: int = 5,
) -> dict:
    """Extract features for every utterance of ``data_dir`` into ``out_dir``; returns a summary dict."""
    data_dir, out_dir = Path(data_dir), Path(out_dir).resolve()
    num_utts = validate_data_dir(data_dir)
    info_path = out_dir / "feat_info.json"
    info = {"feature_type": feature_type, "options": options or {}}
    if info_path.exists():
        old = json.loads(info_path.read_text())
        if {k: old.get(k) for k in info} != info:
            raise ValueError(f"{out_dir} holds features made with {old}; asked for {info}. Remove it or use another dir")
    (out_dir / "data").mkdir(parents=True, exist_ok=True)
    for name in (
        "wav.scp",
        "text",
        "utt2spk",
        "spk2utt",
        "segments",
        "utt2dur",
        "utt2image",
        "utt2image_mismatch",
        "masked_words",
        "word_spans",
    ):
        if (data_dir / name).exists():
            shutil.copyfile(data_dir / name, out_dir / name)
    utts = DataDir.read(data_dir, validate=False).utts
    jobs = _split(utts, nj)
    results, args = [], []
    for j, chunk in enumerate(jobs):
        old_bad = _finished_job(j + 1, chunk, out_dir)
        if old_bad is not None:  # resume: this job finished in an earlier run
            results.append((j + 1, old_bad))
        else:
            args.append((j + 1, chunk, str(data_dir), str(out_dir), feature_type, options, min_frames, not args))
    if len(args) == 1:
        results.append(_run_job(args[0]))
    elif args:
        with mp.get_context("spawn").Pool(len(args)) as pool:
            results += pool.map(_run_job, args)
    bad = sorted((item for _, b in results for item in b), key=lambda x: x[0].encode())
    feats: dict[str, str] = {}
    num_frames: dict[str, str] = {}
    for job in range(1, len(jobs) + 1):
        feats.update(read_table(out_dir / "data" / f"feats.{job}.scp", check_sorted=False))
        num_frames.update(read_table(out_dir / "data" / f"utt2num_frames.{job}"))
    write_table(out_dir / "feats.scp", feats)
    write_table(out_dir / "utt2num_frames", num_frames)
    if bad:
        write_table(out_dir / "bad_utts", dict(bad))
    else:
        (out_dir / "bad_utts").unlink(missing_ok=True)
    extractor_dim, frame_rate = _probe_dim(out_dir / "feats.scp", feature_type, options)
    info.update({"dim": extractor_dim, "frame_rate_hz": frame_rate, "num_utts": len(feats), "num_bad": len(bad)})
    write_text_atomic(info_path, json.dumps(info, indent=2) + "\n")
    for utt, reason in bad:
        log.warning("skipped %s: %s", utt, reason)
    return {"data_dir": str(data_dir), "out_dir": str(out_dir), "num_utts": num_utts, "num_done": len(feats), "bad": bad}


def _probe_dim(feats_scp: Path, feature_type: str, options: dict | None) -> tuple[int, float]:
    for _, mat in kaldiio.load_scp_sequential(str(feats_scp)):
        dim = int(mat.shape[1])
        break
    else:
        dim = 0
    if feature_type == "fbank":
        rate = 1000.0 / float((options or {}).get("frame_shift_ms", 10.0))
    else:
        rate = 50.0 / int((options or {}).get("pool", 1))
    return dim, rate
