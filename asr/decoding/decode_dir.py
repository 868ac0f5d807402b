"""What every decoder shares about dump dirs and decode dirs.

A dump dir holds ``feats.scp``, ``utt2num_frames`` and (for scored sets) ``text``. A decode dir
gets ``hyp`` from the decoder and ``ref`` from here: every reference of the dump dir, so that
utterances whose audio could not be read (no features) are scored as empty hypotheses and listed
in ``missing_feats``, and decoders compared on one set see the same references.
"""

from __future__ import annotations

from pathlib import Path

from asr.data.datadir import read_table
from asr.io_utils import write_table, write_text_atomic


def read_dump(dump_dir: Path) -> tuple[dict[str, str], dict[str, int]]:
    """(utt -> feats ark:offset, utt -> number of frames) of a dump dir."""
    feats_scp = read_table(dump_dir / "feats.scp")
    num_frames = {u: int(n) for u, n in read_table(dump_dir / "utt2num_frames").items()}
    return feats_scp, num_frames


def write_refs(dump_dir: Path, out_dir: Path, decoded: list[str], selected: list[str] | None = None) -> None:
    """Write ``out_dir/ref`` (and ``missing_feats``) from the dump dir's text, if it has one.

    ``selected``: the utterances that were to be decoded (default: all of the dump dir's text)."""
    if not (dump_dir / "text").exists():
        return
    ref = read_table(dump_dir / "text")
    if selected is not None:
        ref = {u: ref[u] for u in selected if u in ref}
    write_table(out_dir / "ref", {u: ref[u] for u in decoded if u in ref})
    missing = [u for u in ref if u not in set(decoded)]
    if missing:  # utterances whose audio could not be read: scored as empty hypotheses
        write_text_atomic(out_dir / "missing_feats", "".join(f"{u}\n" for u in missing))
        write_table(out_dir / "ref", ref)
