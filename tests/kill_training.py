"""``python tests/kill_training.py STEP ARGS...``: ``asr ARGS...``, killed abruptly (exit 3, nothing
saved beyond the last checkpoint) at the first training-log row at or after step STEP, as a killed
job would be. The resume tests run training through it."""

from __future__ import annotations

import os
import sys

from asr.cli.main import main
from asr.training.trainer import Trainer

STOP_AT = int(sys.argv.pop(1))
_append_csv = Trainer._append_csv


def _append_or_die(self, name: str, row: dict) -> None:
    if name == "train_log.csv" and self.step >= STOP_AT:
        os._exit(3)
    _append_csv(self, name, row)


Trainer._append_csv = _append_or_die
sys.exit(main(sys.argv[1:]))
