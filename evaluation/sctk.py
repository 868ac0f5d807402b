"""NIST's ``sclite`` (Debian package sctk) on a reference and a hypothesis text: its own report.

    run_sclite(ref, hyp, out_dir, normalizer)  ->  out_dir/sclite/{ref.trn,hyp.trn,hyp.trn.sys,hyp.trn.pra}

Both texts go through the same normalizer as the toolkit's scorer, written as ``trn`` files
(``words (utt)``), then ``sclite -i rm -o sum pra``. Debian installs it as ``sctk sclite`` (the
binary lives in ``/usr/lib/sctk/bin``); a ``sclite`` on PATH is used first.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from evaluation.normalize import get_normalizer

DEBIAN_SCLITE = Path("/usr/lib/sctk/bin/sclite")


def find_sclite() -> list[str] | None:
    """The command that runs sclite here, or None."""
    if shutil.which("sclite"):
        return ["sclite"]
    if DEBIAN_SCLITE.is_file():
        return [str(DEBIAN_SCLITE)]
    if shutil.which("sctk"):
        return ["sctk", "sclite"]
    return None


def _trn(texts: dict[str, str], utts: list[str], normalize) -> str:
    return "".join(f"{normalize(texts.get(u, ''))} ({u})\n" for u in utts)


def run_sclite(ref: dict[str, str], hyp: dict[str, str], out_dir: str | Path, normalizer: str = "english") -> Path:
    """Run sclite over the utterances of ``ref``; returns its summary file (``hyp.trn.sys``).
    Raises RuntimeError when sclite is not installed or fails."""
    command = find_sclite()
    if command is None:
        raise RuntimeError("sclite not found: install Debian's sctk (make setup does) or put sclite on PATH")
    out = Path(out_dir) / "sclite"
    out.mkdir(parents=True, exist_ok=True)
    utts = sorted(ref)
    normalize = get_normalizer(normalizer)
    (out / "ref.trn").write_text(_trn(ref, utts, normalize), encoding="utf-8")
    (out / "hyp.trn").write_text(_trn(hyp, utts, normalize), encoding="utf-8")
    proc = subprocess.run(
        [*command, "-r", "ref.trn", "trn", "-h", "hyp.trn", "trn", "-i", "rm", "-o", "sum", "pra"],
        cwd=out,
        capture_output=True,
        text=True,
    )
    summary = out / "hyp.trn.sys"
    if proc.returncode != 0 or not summary.is_file():
        raise RuntimeError(f"sclite failed ({proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    return summary
