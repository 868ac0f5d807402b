#!/usr/bin/env python3
"""A dump dir whose picture tables point at another rendering of the same scenes.

    python local/picture_view.py --from-root data/images --to-root data_128/images \\
        dump/whisper_encoder_packaged_pool1/test_0db dump/whisper_encoder_packaged_pool1_data_128/test_0db

``conf/tuning/corpus_quick_128.yaml`` renders the corpus' scenes again at another size (``--captions-only``:
same scene ids, same file names, no speech). The speech features stay where they are: every file of
SRC is linked into DST (``feats.scp`` holds absolute ark paths), except the picture tables
(``utt2image``, ``utt2image_mismatch``), which are rewritten with ``--from-root`` replaced by
``--to-root``. Every rewritten picture must exist; a missing one is an error naming the utterance
and both paths. Running it again replaces DST's tables and links (a no-op when nothing changed).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from asr.data.datadir import read_table
from asr.io_utils import write_table

log = logging.getLogger("picture_view")
PICTURE_TABLES = ("utt2image", "utt2image_mismatch")


def reroot(table: dict[str, str], from_root: Path, to_root: Path, name: str) -> dict[str, str]:
    """utt -> picture path under to_root instead of from_root; every picture must be under from_root and exist."""
    out = {}
    for utt, picture in table.items():
        path = Path(picture).resolve()
        try:
            rel = path.relative_to(from_root)
        except ValueError:
            raise ValueError(f"{name}: utterance {utt}: picture {picture} is not under {from_root}") from None
        new = to_root / rel
        if not new.is_file():
            raise FileNotFoundError(f"{name}: utterance {utt}: {new} does not exist (was {picture})")
        out[utt] = str(new)
    return out


def make_view(src: Path, dst: Path, from_root: Path, to_root: Path) -> dict[str, int]:
    """Link SRC's files into DST, rewriting its picture tables; returns rows rewritten per table."""
    if not (src / "utt2image").is_file():
        raise FileNotFoundError(f"{src}: no utt2image (not a picture dump dir)")
    from_root, to_root = from_root.resolve(), to_root.resolve()
    tables = {
        name: reroot(read_table(src / name), from_root, to_root, str(src / name))
        for name in PICTURE_TABLES
        if (src / name).is_file()
    }  # all checked before DST is touched
    dst.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        if entry.name in tables or entry.name.startswith("."):
            continue
        link = dst / entry.name
        if link.is_symlink() or link.is_file():
            link.unlink()
        elif link.exists():
            raise IsADirectoryError(f"{link} exists and is not a link: remove it first")
        os.symlink(entry.resolve(), link)
    for name, rows in tables.items():
        write_table(dst / name, rows)  # renamed over DST's entry: a link there is replaced, not written through
    return {name: len(rows) for name, rows in tables.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--from-root", type=Path, required=True, help="picture root the tables use now")
    p.add_argument("--to-root", type=Path, required=True, help="picture root of the other rendering")
    p.add_argument("src", type=Path, help="dump dir with utt2image")
    p.add_argument("dst", type=Path, help="the view to write")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        counts = make_view(args.src, args.dst, args.from_root, args.to_root)
    except (OSError, ValueError) as e:
        print(f"picture_view: {e}", file=sys.stderr)
        return 1
    log.info(
        "%s -> %s: %s re-rooted at %s", args.src, args.dst, ", ".join(f"{n} ({k} utts)" for n, k in counts.items()), args.to_root
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
