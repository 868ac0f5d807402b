"""Scoring of image-conditioned ASR (evaluation/image_conditions.py, `asr results --by-image`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asr.io_utils import write_table
from evaluation.image_conditions import (
    bootstrap_table,
    class_table,
    class_words_right,
    collect,
    format_table,
    masked_words_right,
    paired_bootstrap,
    read_word_classes,
)
from evaluation.normalize import get_normalizer
from evaluation.score import score_dir

REFS = {"u1": "two red circles on the left", "u2": "a blue square at the top"}


def _decode_dir(
    root: Path, condition: str, image: str, hyps: dict[str, str], masked: dict[str, str] | None = None, guidance: float = 0.0
) -> Path:
    data = root / "dump" / condition
    data.mkdir(parents=True, exist_ok=True)
    write_table(data / "text", REFS)
    if masked:
        write_table(data / "masked_words", masked)
    d = root / f"decode_{condition}_{image}" if not guidance else root / f"decode_{condition}_{image}_pg{guidance:g}"
    d.mkdir()
    write_table(d / "ref", REFS)
    write_table(d / "hyp", hyps)
    info = {"data_dir": str(data), "image": image, **({"picture_guidance": guidance} if guidance else {})}
    (d / "decode_info.json").write_text(json.dumps(info))
    score_dir(d)
    return d


def test_masked_words_right_counts_aligned_identical_words():
    norm = get_normalizer("english")
    masked = {"u1": "1", "u2": "1 2"}  # "red"; "blue square"
    hyp = {"u1": "two red circles on the left", "u2": "a green square at the top"}
    assert masked_words_right(REFS, hyp, masked, norm) == (2, 3)  # red, square right; blue wrong
    # a deletion before the masked word shifts positions: alignment, not position, decides
    assert masked_words_right(REFS, {"u1": "red circles on the left"}, {"u1": "1"}, norm) == (1, 1)
    assert masked_words_right(REFS, {"u1": ""}, {"u1": "1"}, norm) == (0, 1)


def test_table_rows_ratio_masked_counts_and_plot(tmp_path):
    perfect = dict(REFS)
    wrong_colours = {"u1": "two blue circles on the left", "u2": "a red square at the top"}
    _decode_dir(tmp_path, "test_0db", "utt2image", perfect)
    _decode_dir(tmp_path, "test_0db", "utt2image_mismatch", wrong_colours)
    _decode_dir(tmp_path, "test_0db", "none", {"u1": "two circles on the left", "u2": "a square at the top"})
    m = {"u1": "1", "u2": "1"}
    _decode_dir(tmp_path, "test_masked", "utt2image", perfect, m)
    _decode_dir(tmp_path, "test_masked", "none", wrong_colours, m)
    _decode_dir(tmp_path, "test_clean", "none", perfect)
    rows = collect(sorted(str(p) for p in tmp_path.glob("decode_*")))
    assert [r.condition for r in rows] == ["test_clean", "test_0db", "test_masked"]  # the conditions' order
    r0 = rows[1]
    assert r0.num_words == 12 and r0.wer["true"] == 0.0 and r0.wer["other"] == pytest.approx(200 / 12)
    assert r0.wer["none"] == pytest.approx(200 / 12) and not r0.masked
    assert rows[2].masked == {"true": (2, 2), "none": (0, 2)}
    table = format_table(rows)
    assert "| test_0db | 12 | 0.00 | 16.67 | 16.67 | 0.00 |" in table
    assert "| test_masked | 12 | 0.00 | - | 16.67 | 0.00 | 2/2 / - / 0/2 |" in table
    assert "| test_clean | 12 | - | - | 0.00 | - |" in table
    assert "guidance" not in table  # plain decoding everywhere: no note
    assert r0.utt_errors == {"true": {"u1": 0, "u2": 0}, "other": {"u1": 1, "u2": 1}, "none": {"u1": 1, "u2": 1}}
    intervals = bootstrap_table(rows, num_resamples=200)
    # every resample has 0 errors with the true picture, 2 per 12 words with the other: no spread
    assert "| test_0db | 2 | 0.00 [0.00, 0.00] | +16.67 [+16.67, +16.67] |" in intervals
    assert "| test_masked | 2 | 0.00 [0.00, 0.00] | - |" in intervals
    assert "test_clean" not in intervals  # one variant: nothing to compare
    # the command line: table file + PNG
    out, png = tmp_path / "IMAGES.md", tmp_path / "images.png"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "asr"),
            "results",
            "--by-image",
            "--plot",
            str(png),
            "--out",
            str(out),
            *sorted(str(p) for p in tmp_path.glob("decode_*")),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("| Condition |") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Paired bootstrap over the utterances (1000 resamples" in proc.stdout


def test_paired_bootstrap_intervals():
    words = {"u1": 5, "u2": 5}
    # resamples of two utterances: (u1, u1) 0/4, (u1, u2) 2/4, (u2, u2) 4/4 with chances 1/4, 1/2, 1/4
    stats = paired_bootstrap({"true": {"u1": 0, "u2": 2}, "none": {"u1": 2, "u2": 2}}, words, num_resamples=2000)
    assert stats == {"true/none": (0.5, 0.0, 1.0)}
    ratios = paired_bootstrap({"true": {"u1": 0, "u2": 2}, "none": {"u1": 2, "u2": 2}}, words, 2000, seed=1)
    assert ratios == stats  # the bounds are the extreme resamples, whatever the seed
    # same errors with both pictures: other - true is 0 in every resample
    same = paired_bootstrap({"true": {"u1": 1, "u2": 0}, "other": {"u1": 1, "u2": 0}}, words, 100)
    assert same == {"other-true": (0.0, 0.0, 0.0)}
    # many utterances, the true picture one error better on each: the interval is tight around the value
    many = {f"u{i}": 10 for i in range(200)}
    stats = paired_bootstrap(
        {"true": {u: 2 + i % 3 for i, u in enumerate(many)}, "none": {u: 3 + i % 3 for i, u in enumerate(many)}}, many, 500
    )
    value, low, high = stats["true/none"]
    assert low < value < high and high - low < 0.1
    assert paired_bootstrap({"true": {"a": 1}}, {"b": 3}) == {}  # no common utterance


def test_bad_dirs_are_named(tmp_path):
    d = _decode_dir(tmp_path, "test_0db", "none", dict(REFS))
    twin = tmp_path / "decode_again"
    twin.mkdir()
    for name in ("ref", "hyp", "decode_info.json", "scores.json"):
        (twin / name).write_bytes((d / name).read_bytes())
    with pytest.raises(ValueError, match="a second decode dir of test_0db with the none picture"):
        collect([str(d), str(twin)])
    (twin / "decode_info.json").unlink()
    with pytest.raises(ValueError, match="decode_again: no decode_info.json"):
        collect([str(twin)])


def test_picture_guidance_is_noted_and_weights_are_not_mixed(tmp_path):
    _decode_dir(tmp_path, "test_0db", "utt2image", dict(REFS), guidance=0.5)
    _decode_dir(tmp_path, "test_0db", "none", {"u1": "two circles on the left", "u2": "a square at the top"})
    _decode_dir(tmp_path, "test_clean", "utt2image", dict(REFS), guidance=0.5)
    rows = collect(sorted(str(p) for p in tmp_path.glob("decode_*")))
    assert rows[1].guidance == {"true": 0.5, "none": 0.0}
    assert "picture guidance (`asr decode-llm --picture-guidance W`): true (0.5); no picture: plain" in format_table(rows)
    plain = _decode_dir(tmp_path, "test_5db", "utt2image", dict(REFS))
    with pytest.raises(ValueError, match=r"true picture's decode dirs mix picture guidance weights \[0.0, 0.5\]"):
        collect(sorted(str(p) for p in tmp_path.glob("decode_*")))
    assert collect([plain])[0].guidance == {"true": 0.0}


def test_words_right_per_word_class(tmp_path):
    classes = tmp_path / "word_classes"
    write_table(classes, {"colour": "red green blue", "shape_one": "square", "shape_many": "circles"})
    word_class = read_word_classes(classes)
    assert word_class["circles"] == word_class["square"] == "shape" and word_class["red"] == "colour"
    norm = get_normalizer("english")
    hyp = {"u1": "two blue circles on the left", "u2": "a blue square top"}  # red -> blue; "at the" deleted
    assert class_words_right(REFS, hyp, word_class, norm) == {"colour": (1, 2), "shape": (2, 2), "other": (6, 8)}
    _decode_dir(tmp_path, "test_0db", "utt2image", dict(REFS))
    _decode_dir(tmp_path, "test_0db", "none", hyp)
    rows = collect(sorted(str(p) for p in tmp_path.glob("decode_*")), word_classes=classes)
    assert rows[0].classes["true"]["colour"] == (2, 2) and rows[0].classes["none"]["colour"] == (1, 2)
    table = class_table(rows)
    assert "| Condition | colour | shape | other |" in table
    assert "| test_0db | 100 / - / 50 (2) | 100 / - / 100 (2) | 100 / - / 75 (8) |" in table
    write_table(classes, {"colour": "red", "shape": "red"})
    with pytest.raises(ValueError, match="'red' is in two classes"):
        read_word_classes(classes)
