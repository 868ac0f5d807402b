"""Tests for the ``asr`` command line, run as a subprocess of the installed entry point."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from conftest import ESPEAK_UTTS

from asr.cli.commands import COMMANDS
from asr.data.datadir import read_table
from asr.features.cmvn import compute_cmvn_stats, read_cmvn_stats

ASR = Path(sys.executable).parent / "asr"  # the console script installed next to this interpreter


def asr(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    if not ASR.exists():
        pytest.skip(f"{ASR} not installed (pip install -e .)")
    return subprocess.run([str(ASR), *map(str, args)], capture_output=True, text=True, timeout=timeout)


def test_help_lists_every_command():
    res = asr("--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("usage: asr")
    for name in COMMANDS:
        assert name in res.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_subcommand_help(name):
    res = asr(name, "--help")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"usage: asr {name}")
    assert COMMANDS[name][1] in " ".join(res.stdout.split())  # the description is shown


def test_no_command_is_a_usage_error():
    res = asr()
    assert res.returncode == 2
    assert "usage: asr" in res.stderr


def test_validate_good_and_bad_dirs(espeak_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("wav.scp", "utt2spk", "spk2utt"):
        (bad / name).write_bytes((espeak_dir / name).read_bytes())
    lines = (espeak_dir / "text").read_text().splitlines()
    lines[2] = lines[2].split()[0]  # line 3: utterance id with no transcript
    (bad / "text").write_text("\n".join(lines) + "\n")

    res = asr("validate-data-dir", espeak_dir)
    assert res.returncode == 0, res.stderr
    assert f"{espeak_dir}: OK, {len(ESPEAK_UTTS)} utterances" in res.stdout

    res = asr("validate-data-dir", espeak_dir, bad)
    assert res.returncode == 1
    assert f"{bad / 'text'}:3: empty transcript" in res.stderr
    assert f"{espeak_dir}: OK" in res.stdout  # the good dir is still checked and reported

    # --no-text makes a *missing* text acceptable; a text that exists is still validated
    assert asr("validate-data-dir", "--no-text", bad).returncode == 1
    (bad / "text").unlink()
    res = asr("validate-data-dir", bad)
    assert res.returncode == 1 and f"{bad / 'text'}: file is missing" in res.stderr
    assert asr("validate-data-dir", "--no-text", bad).returncode == 0


def test_make_feats_and_compute_cmvn(espeak_dir, tmp_path):
    dump = tmp_path / "dump"
    res = asr("make-feats", espeak_dir, dump, "--nj", "1", timeout=300)
    assert res.returncode == 0, res.stderr
    n = len(ESPEAK_UTTS)
    assert f"features for {n}/{n} utterances (fbank)" in res.stdout
    assert asr("validate-data-dir", "--feats", dump).returncode == 0

    frames = {k: int(v) for k, v in read_table(dump / "utt2num_frames").items()}
    mats = dict(kaldiio.load_scp(str(dump / "feats.scp")))
    assert sorted(mats) == sorted(frames) == sorted(u for u, *_ in ESPEAK_UTTS)
    assert all(mats[u].shape == (frames[u], 80) for u in mats)

    res = asr("compute-cmvn", dump / "feats.scp", dump / "cmvn.ark")
    assert res.returncode == 0, res.stderr
    total = sum(frames.values())
    assert f"global CMVN over {total} frames, dim 80" in res.stdout
    stats = read_cmvn_stats(dump / "cmvn.ark")
    assert stats.shape == (2, 81) and stats[0, -1] == total
    np.testing.assert_allclose(stats, compute_cmvn_stats(dump / "feats.scp"), rtol=1e-12)


def test_make_feats_on_invalid_dir_fails_cleanly(tmp_path):
    res = asr("make-feats", tmp_path / "missing", tmp_path / "dump")
    assert res.returncode == 1
    assert "asr make-feats: error:" in res.stderr and "not a directory" in res.stderr
    assert "Traceback" not in res.stderr
