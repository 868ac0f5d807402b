"""One results table across decode dirs, from the ``scores.json`` that scoring left in each.

Command line::

    python -m evaluation.summary exp/*/decode_* [--format plain]

prints::

    | Decode dir        | #Snt | #Wrd |   WER |   Sub |   Del |   Ins |  S.Err |
    | :---------------- | ---: | ---: | ----: | ----: | ----: | ----: | -----: |
    | exp/a/decode_test |    4 |   15 | 40.00 | 13.33 | 13.33 | 13.33 | 100.00 |

Rates are percentages of reference tokens (S.Err: of sentences), two decimals.

When the dirs mix word and character scoring, a ``Metric`` column tells WER from CER and the
count column is headed ``#Tok``.
"""

from __future__ import annotations

import argparse
import glob
import logging
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from evaluation.metrics import CorpusScore, metric_name
from evaluation.score import SCORES_FILE, read_scores

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryRow:
    """One scored decode dir."""

    name: str
    unit: str
    score: CorpusScore


def _expand(decode_dirs: str | Path | Iterable[str | Path]) -> list[str]:
    """Paths as given; a string with ``*``, ``?`` or ``[`` is a glob for directories, sorted."""
    items = [decode_dirs] if isinstance(decode_dirs, (str, Path)) else list(decode_dirs)
    paths = []
    for item in map(str, items):
        if any(c in item for c in "*?["):
            paths += sorted(p for p in glob.glob(item) if Path(p).is_dir())
        else:
            paths.append(item)
    return paths


def summarize(decode_dirs: str | Path | Iterable[str | Path]) -> list[SummaryRow]:
    """Rows for every decode dir (or glob) given; dirs without ``scores.json`` are skipped with a warning."""
    rows = []
    for path in _expand(decode_dirs):
        if not (Path(path) / SCORES_FILE).is_file():
            logger.warning("%s: no %s (not scored yet?); skipped", path, SCORES_FILE)
            continue
        unit, score = read_scores(path)
        rows.append(SummaryRow(path.rstrip("/"), unit, score))
    return rows


def format_table(rows: Sequence[SummaryRow], fmt: str = "markdown") -> str:
    """Render rows as a ``markdown`` table or ``plain`` space-aligned columns (rates in percent)."""
    if fmt not in ("markdown", "plain"):
        raise ValueError(f"unknown table format {fmt!r}; choose 'markdown' or 'plain'")
    units = {row.unit for row in rows}
    mixed = len(units) > 1
    only_unit = next(iter(units), "word")
    header = ["Decode dir"] + (["Metric"] if mixed else [])
    header += ["#Snt", "#Tok" if mixed else ("#Chr" if only_unit == "char" else "#Wrd")]
    header += ["Err" if mixed else metric_name(only_unit), "Sub", "Del", "Ins", "S.Err"]
    table = [header]
    for row in rows:
        s = row.score
        rates = [s.err_rate, s.sub_rate, s.del_rate, s.ins_rate, s.sent_err_rate]
        cells = [row.name] + ([metric_name(row.unit)] if mixed else [])
        table.append(cells + [str(s.num_sents), str(s.num_ref_tokens)] + [f"{r:.2f}" for r in rates])
    num_text = 2 if mixed else 1  # leading text columns, left-aligned; the rest are numbers
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]

    def line(cells: list[str]) -> list[str]:
        return [c.ljust(w) if i < num_text else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))]

    if fmt == "plain":
        return "\n".join("  ".join(line(cells)).rstrip() for cells in table) + "\n"
    rule = [":" + "-" * (w - 1) if i < num_text else "-" * (w - 1) + ":" for i, w in enumerate(widths)]
    lines = [line(header), rule] + [line(cells) for cells in table[1:]]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m evaluation.summary",
        description="Print a WER/CER table across decode dirs scored by python -m evaluation.score.",
    )
    parser.add_argument("decode_dirs", nargs="+", metavar="DIR", help="decode dirs or quoted glob patterns")
    parser.add_argument("--format", choices=("markdown", "plain"), default="markdown")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    rows = summarize(args.decode_dirs)
    if not rows:
        print("error: none of the given dirs has been scored", file=sys.stderr)
        return 1
    sys.stdout.write(format_table(rows, args.format))
    return 0


if __name__ == "__main__":
    sys.exit(main())
