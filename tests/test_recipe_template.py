"""The shared stage script: recipes/TEMPLATE/asr.sh, its option parsing, and ``asr config-get``.

Every stage of the template runs in the recipe tests (test_recipe.py, test_recipe_corpora.py); these
tests check what makes it shared: each corpus's run.sh keeps its own stage 0 only and hands every
other option on to the one asr.sh.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from asr.cli.commands import config_value, shell_word

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TEMPLATE = RECIPES / "TEMPLATE"
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("recipe", ["mini", "librispeech", "aishell"])
def test_recipes_share_one_stage_script(recipe):
    d = RECIPES / recipe
    assert (d / "asr.sh").resolve() == (TEMPLATE / "asr.sh").resolve()
    assert (d / "utils").resolve() == (TEMPLATE / "utils").resolve()
    run = (d / "run.sh").read_text()
    # the stage code of stages 1-7 lives in the template alone
    for command in ("asr make-feats", "train-tokenizer", " train --config", "train-llm", "asr decode", "asr export"):
        assert command not in run, f"{recipe}/run.sh still runs {command!r} itself"
    assert "./asr.sh" in run


def _parse(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    (tmp_path / "utils").mkdir(exist_ok=True)
    (tmp_path / "utils" / "parse_options.sh").write_text((TEMPLATE / "utils/parse_options.sh").read_text())
    (tmp_path / "s.sh").write_text("set -euo pipefail\n" + body)
    return subprocess.run(["bash", "s.sh", *args], cwd=tmp_path, capture_output=True, text=True)


def test_parse_options_sets_declared_and_refuses_unknown(tmp_path):
    body = 'nj=1\nfoo_bar=x\n__options="nj foo_bar"\n. utils/parse_options.sh\necho "$nj $foo_bar"\n'
    ok = _parse(tmp_path, body, "--nj", "3", "--foo-bar=y z")
    assert ok.returncode == 0 and ok.stdout.strip() == "3 y z"
    bad = _parse(tmp_path, body, "--nope", "1")
    assert bad.returncode == 1 and "unknown option --nope" in bad.stderr


def test_parse_options_hands_undeclared_options_on(tmp_path):
    body = 'nj=1\n__options="nj"\n__passthrough=()\n. utils/parse_options.sh\necho "$nj"; printf "<%s>" "${__passthrough[@]}"\n'
    out = _parse(tmp_path, body, "--config", "a b.yaml", "--nj", "2", "--exp-tag=t")
    assert out.returncode == 0, out.stderr
    nj, passed = out.stdout.split("\n", 1)
    assert nj == "2" and passed == "<--config><a b.yaml><--exp-tag=t>"
    assert "./asr.sh --help" in _parse(tmp_path, body, "--help").stdout


def test_template_refuses_a_run_without_config(tmp_path):
    proc = subprocess.run(
        ["bash", str(TEMPLATE / "asr.sh"), "--test-sets", "test"], cwd=TEMPLATE, capture_output=True, text=True, env=ENV
    )
    assert proc.returncode == 1 and "--config is required" in proc.stderr


def test_config_value_follows_dotted_keys():
    cfg = {"features": {"type": "whisper_encoder", "options": {"pool": 2}}, "decode": None}
    assert config_value(cfg, "features.options.pool") == 2
    for key, missing in [("features.options.model", "features.options.model"), ("decode.beam_size", "decode"), ("x.y", "x")]:
        with pytest.raises(KeyError) as err:
            config_value(cfg, key)
        assert err.value.args[0] == missing
    assert [shell_word(v) for v in (True, 0.5, "a b", {"k": [1]})] == ["true", "0.5", "a b", '{"k": [1]}']


def test_config_get_command(tmp_path):
    asr = Path(sys.executable).parent / "asr"
    if not asr.exists():
        pytest.skip(f"{asr} not installed (pip install -e .)")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {kind: whisper_cformer, refine: false}\n")

    def run(*args):
        return subprocess.run([str(asr), "config-get", str(cfg), *args], capture_output=True, text=True)

    assert run("model.kind").stdout == "whisper_cformer\n"
    assert run("model.refine").stdout == "false\n"
    assert run("decode.beam_size", "--default", "4").stdout == "4\n"
    missing = run("decode.beam_size")
    assert missing.returncode == 1 and "c.yaml: no decode" in missing.stderr
    cfg.write_text("model: [unclosed\n")
    broken = run("model.kind", "--default", "x")
    assert broken.returncode == 1 and "cannot read the config" in broken.stderr


def test_speed_perturb_option_trains_on_the_three_way_copies(tmp_path):
    import math

    import numpy as np
    import soundfile as sf

    (tmp_path / "asr.sh").symlink_to(TEMPLATE / "asr.sh")
    (tmp_path / "utils").symlink_to(TEMPLATE / "utils")
    (tmp_path / "fbank.yaml").write_text("features: {type: fbank}\n")
    t = np.arange(16000) / 16000
    for s in ("train", "dev"):
        d = tmp_path / "data" / s
        d.mkdir(parents=True)
        sf.write(d / "a.wav", 0.3 * np.sin(2 * math.pi * 440 * t), 16000, subtype="PCM_16")
        for name, content in {
            "wav.scp": f"s1-a {d / 'a.wav'}\n",
            "text": "s1-a hello\n",
            "utt2spk": "s1-a s1\n",
            "spk2utt": "s1 s1-a\n",
        }.items():
            (d / name).write_text(content)
    command = "bash asr.sh --config fbank.yaml --test-sets dev --nj 1 --stop-stage 1".split()
    proc = subprocess.run([*command, "--speed-perturb", "0.9 1.0 1.1"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (frames_file,) = (tmp_path / "dump").glob("*/train_sp/utt2num_frames")
    frames = dict(line.split() for line in frames_file.read_text().splitlines())
    assert sorted(frames) == ["s1-a", "sp0.9-s1-a", "sp1.1-s1-a"]
    # 10 ms frames: 1 s of audio -> ~98, read at 0.9 x speed -> ~109, at 1.1 x -> ~89
    assert int(frames["sp0.9-s1-a"]) > int(frames["s1-a"]) > int(frames["sp1.1-s1-a"])
    assert abs(int(frames["sp0.9-s1-a"]) - int(frames["s1-a"]) / 0.9) < 3
    assert (frames_file.parent / "cmvn.ark").exists()  # CMVN over the perturbed train set
