"""Tests for the evaluation package: counts worked out by hand, reports, tables, and sclite."""

from __future__ import annotations

import math
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import (
    ChineseNormalizer,
    CorpusScore,
    EnglishNormalizer,
    Op,
    ScoringError,
    align_utterances,
    format_result_txt,
    format_summary_line,
    format_table,
    get_normalizer,
    read_scores,
    score_dir,
    score_texts,
    summarize,
)

REPO = Path(__file__).resolve().parents[1]

# (ref, hyp, (C, S, D, I)), each worked out by hand:
WORD_CASES = [
    # sat->sit and the->mat are substitutions, "too" is inserted; deleting "the" instead would
    # leave "mat mat" needing an extra insertion (4 errors instead of 3).
    ("the cat sat on the mat", "the cat sit on mat mat too", (4, 2, 0, 1)),
    ("hello world", "hello wonderful world", (2, 0, 0, 1)),
    ("a b c d e f", "a c d e f", (5, 0, 1, 0)),
    ("yes", "", (0, 0, 1, 0)),
    ("", "uh huh", (0, 0, 0, 2)),
    ("", "", (0, 0, 0, 0)),
    ("one two three", "four five six", (0, 3, 0, 0)),
    # inserting "x" and deleting "d" (2 errors) beats four substitutions
    ("a b c d", "x a b c", (3, 0, 1, 1)),
    ("i am here", "i am not here at all", (3, 0, 0, 3)),
]


def _counts(utt):
    return utt.corr, utt.sub, utt.dele, utt.ins


@pytest.mark.parametrize("ref,hyp,expected", WORD_CASES)
def test_word_counts_match_hand_computed(ref, hyp, expected):
    (utt,) = align_utterances(["u"], [ref], [hyp], "word")
    assert _counts(utt) == expected
    assert utt.ref_tokens == ref.split() and utt.hyp_tokens == hyp.split()


def test_ops_carry_tokens():
    (utt,) = align_utterances(["u"], ["the cat sat on the mat"], ["the cat sit on mat mat too"])
    assert utt.ops == [
        Op("C", "the", "the"),
        Op("C", "cat", "cat"),
        Op("S", "sat", "sit"),
        Op("C", "on", "on"),
        Op("S", "the", "mat"),
        Op("C", "mat", "mat"),
        Op("I", None, "too"),
    ]
    (utt,) = align_utterances(["u"], ["yes"], [""])
    assert utt.ops == [Op("D", "yes", None)]


def test_corpus_totals_and_rates():
    refs, hyps = zip(*[(r, h) for r, h, _ in WORD_CASES[:4]])
    utts = align_utterances(["u1", "u2", "u3", "u4"], refs, hyps)
    score = CorpusScore.from_utterances(utts)
    # 6 + 2 + 6 + 1 reference words; 2 sub (case 1), 2 del (cases 3, 4), 2 ins (cases 1, 2)
    assert (score.num_sents, score.num_ref_tokens) == (4, 15)
    assert (score.corr, score.sub, score.dele, score.ins, score.sent_errors) == (11, 2, 2, 2, 4)
    assert score.err_rate == pytest.approx(40.0)
    assert score.corr_rate == pytest.approx(100 * 11 / 15)
    assert score.sub_rate == score.del_rate == score.ins_rate == pytest.approx(100 * 2 / 15)
    assert score.sent_err_rate == 100.0


def test_rates_with_no_reference_tokens():
    assert CorpusScore.from_utterances([]).err_rate == 0.0
    utts = align_utterances(["u"], [""], ["uh huh"])
    score = CorpusScore.from_utterances(utts)
    assert score.ins == 2 and math.isinf(score.err_rate)


def test_chinese_cer():
    ref = {"c1": "我爱北京天安门。", "c2": "今天 天气 很好！"}
    hyp = {"c1": "我爱南京天安门广场", "c2": "今天天气好"}
    utts, score = score_texts(ref, hyp, unit="char", normalizer="chinese")
    # c1: 北->南 substituted, 广 and 场 inserted (7 ref chars); c2: 很 deleted (6 ref chars)
    assert [_counts(u) for u in utts] == [(6, 1, 0, 2), (5, 0, 1, 0)]
    assert utts[0].ref_tokens == list("我爱北京天安门")
    assert (score.num_ref_tokens, score.num_errors) == (13, 4)
    assert score.err_rate == pytest.approx(100 * 4 / 13)
    assert format_summary_line(score, "char") == "%CER 30.77 [ 4 / 13, 2 ins, 1 del, 1 sub ]"


def test_char_scoring_ignores_spaces():
    (utt,) = align_utterances(["u"], ["我用 python 写代码"], ["我用python写代吗"], "char")
    assert len(utt.ref_tokens) == 11 and _counts(utt) == (10, 1, 0, 0)
    (utt,) = align_utterances(["u"], ["the cat"], ["the bat"], "char")
    assert utt.ref_tokens == list("thecat") and _counts(utt) == (5, 1, 0, 0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unit"):
        align_utterances([], [], [], "phone")
    with pytest.raises(ValueError):
        align_utterances(["a", "b"], ["x"], ["y"])
    with pytest.raises(ValueError, match="unknown normalizer"):
        get_normalizer("french")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello, World! It's a well-known fact—isn't it?", "hello world it's a well known fact isn't it"),
        ("Don\u2019t stop", "don't stop"),
        ("'quoted' students' books", "quoted students books"),
        ("U.S. population: 1,000", "us population 1000"),
        ("ＡＢＣ１２３", "abc123"),
        ("  a \t b\n", "a b"),
        ("", ""),
    ],
)
def test_english_normalizer(text, expected):
    assert EnglishNormalizer()(text) == expected
    assert get_normalizer("english")(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("你好，世界！", "你好世界"),
        ("我 爱 北京", "我爱北京"),
        ("我 爱 Python 编程。", "我爱python编程"),
        ("我喜欢 Machine Learning。", "我喜欢machine learning"),
        ("《三体》【第一部】", "三体第一部"),
        ("“你好”（ＯＫ）", "你好ok"),
    ],
)
def test_chinese_normalizer(text, expected):
    assert ChineseNormalizer()(text) == expected


def test_none_normalizer_keeps_text():
    assert get_normalizer("none")("Hello, World!") == "Hello, World!"


def test_score_texts_normalizes_and_checks_ids(caplog):
    utts, score = score_texts({"a": "The cat.", "b": "Hello there"}, {"a": "the CAT"})
    assert score.num_errors == 2 and score.num_missing_hyp == 1
    assert [_counts(u) for u in utts] == [(2, 0, 0, 0), (0, 0, 2, 0)]
    assert "1 of 2 utterances have no hypothesis" in caplog.text
    with pytest.raises(ScoringError, match="'zz'"):
        score_texts({"a": "x"}, {"a": "x", "zz": "y"})


@pytest.fixture
def decode_dir(tmp_path):
    d = tmp_path / "decode_test"
    d.mkdir()
    refs = ["spk1-utt1 The cat sat on the mat.", "spk1-utt2 Hello world!", "spk2-utt3 a b c d e f", "spk2-utt4 yes"]
    hyps = [
        "spk1-utt1 the cat sit on mat mat too",
        "spk1-utt2 hello wonderful world",
        "spk2-utt3 a c d e f",
        "spk2-utt4",
    ]
    (d / "ref").write_text("\n".join(refs) + "\n", encoding="utf-8")
    (d / "hyp").write_text("\n".join(hyps) + "\n", encoding="utf-8")
    return d


def test_score_dir_writes_reports(decode_dir):
    score = score_dir(decode_dir)
    assert (score.num_ref_tokens, score.num_errors) == (15, 6)
    assert (decode_dir / "wer").read_text() == "%WER 40.00 [ 6 / 15, 2 ins, 2 del, 2 sub ]\n"
    assert read_scores(decode_dir) == ("word", score)
    report = (decode_dir / "result.txt").read_text(encoding="utf-8")
    lines = report.splitlines()
    # The summary box: same numbers as sclite's sum report for these four utterances.
    header = next(line for line in lines if "SPKR" in line)
    assert re.sub(r"\s+", " ", header) == "| SPKR | # Snt # Wrd | Corr Sub Del Ins Err S.Err |"
    total = next(line for line in lines if "Sum/Avg" in line)
    assert re.findall(r"[\d.]+", total) == ["4", "15", "73.3", "13.3", "13.3", "13.3", "40.0", "100.0"]
    assert "%WER 40.00 [ 6 / 15, 2 ins, 2 del, 2 sub ]" in lines
    assert "%SER 100.00 [ 4 / 4 ]" in lines
    # Alignment blocks, as sclite's pralign prints them (minus its trailing spaces).
    i = lines.index("id: (spk1-utt1)")
    assert lines[i : i + 5] == [
        "id: (spk1-utt1)",
        "Scores: (#C #S #D #I) 4 2 0 1",
        "REF:  the cat SAT on THE mat ***",
        "HYP:  the cat SIT on MAT mat TOO",
        "Eval:         S      S       I",
    ]
    i = lines.index("id: (spk1-utt2)")
    assert lines[i + 2 : i + 5] == ["REF:  hello ********* world", "HYP:  hello WONDERFUL world", "Eval:       I"]
    i = lines.index("id: (spk2-utt4)")
    assert lines[i + 1 : i + 5] == ["Scores: (#C #S #D #I) 0 0 1 0", "REF:  YES", "HYP:  ***", "Eval: D"]
    assert not list(decode_dir.glob(".*tmp*"))  # atomic writes leave no temp files


def test_result_txt_char_unit_and_cjk_columns():
    utts, score = score_texts({"c1": "我爱北京天安门"}, {"c1": "我爱南京天安门广场"}, "char", "chinese")
    lines = format_result_txt(utts, score, "char").splitlines()
    assert re.sub(r"\s+", " ", next(line for line in lines if "SPKR" in line)).startswith("| SPKR | # Snt # Chr |")
    i = lines.index("id: (c1)")
    # CJK characters are two columns wide, so a run of two asterisks faces each inserted one
    assert lines[i + 2 : i + 5] == [
        "REF:  我 爱 北 京 天 安 门 ** **",
        "HYP:  我 爱 南 京 天 安 门 广 场",
        "Eval:       S              I  I",
    ]


def test_score_dir_char_writes_cer(tmp_path):
    (tmp_path / "ref").write_text("c1 我爱北京\n", encoding="utf-8")
    (tmp_path / "hyp").write_text("c1 我爱南京\n", encoding="utf-8")
    score_dir(tmp_path, unit="char", normalizer="chinese")
    assert (tmp_path / "cer").read_text(encoding="utf-8") == "%CER 25.00 [ 1 / 4, 0 ins, 0 del, 1 sub ]\n"
    assert not (tmp_path / "wer").exists()


def test_summary_table(tmp_path, decode_dir):
    score_dir(decode_dir)
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / "ref").write_text("c1 我爱北京\n", encoding="utf-8")
    (tmp_path / "zh" / "hyp").write_text("c1 我爱南京\n", encoding="utf-8")
    score_dir(tmp_path / "zh", unit="char", normalizer="chinese")
    (tmp_path / "unscored").mkdir()

    rows = summarize([decode_dir])
    assert [(r.name, r.unit, r.score.num_errors) for r in rows] == [(str(decode_dir), "word", 6)]
    table = format_table(rows).splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")] == [
        "Decode dir",
        "#Snt",
        "#Wrd",
        "WER",
        "Sub",
        "Del",
        "Ins",
        "S.Err",
    ]
    assert table[1].startswith("| :---") and table[1].endswith("---: |")
    assert [c.strip() for c in table[2].strip("|").split("|")][1:] == ["4", "15", "40.00", "13.33", "13.33", "13.33", "100.00"]
    plain = format_table(rows, "plain").splitlines()
    assert plain[0].split() == ["Decode", "dir", "#Snt", "#Wrd", "WER", "Sub", "Del", "Ins", "S.Err"]
    assert plain[1].split()[1:] == ["4", "15", "40.00", "13.33", "13.33", "13.33", "100.00"]

    rows = summarize(str(tmp_path / "*"))  # a glob; the unscored dir is skipped
    assert [Path(r.name).name for r in rows] == ["decode_test", "zh"]
    table = format_table(rows).splitlines()
    assert [c.strip() for c in table[0].strip("|").split("|")][:5] == ["Decode dir", "Metric", "#Snt", "#Tok", "Err"]
    assert [c.strip() for c in table[3].strip("|").split("|")][1:5] == ["CER", "1", "4", "25.00"]


def _run_module(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True)


def test_command_lines(tmp_path, decode_dir):
    out = tmp_path / "out"
    proc = _run_module("evaluation.score", "--ref", decode_dir / "ref", "--hyp", decode_dir / "hyp", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "%WER 40.00 [ 6 / 15, 2 ins, 2 del, 2 sub ]\n"
    assert "Warning" not in proc.stderr
    assert (out / "result.txt").is_file()
    proc = _run_module("evaluation.summary", out, "--format", "plain")
    assert proc.returncode == 0 and "40.00" in proc.stdout
    proc = _run_module("evaluation.score", "--hyp", decode_dir / "hyp", "--out", tmp_path / "nowhere")
    assert proc.returncode == 1 and "ref" in proc.stderr
    for module in ("evaluation.score", "evaluation.summary"):
        proc = _run_module(module, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout


# --- cross-check against NIST sclite (Debian installs it as `sctk sclite`) ---


def _sclite_command():
    if shutil.which("sclite"):
        return ["sclite"]
    if shutil.which("sctk") and Path("/usr/lib/sctk/bin/sclite").exists():
        return ["sctk", "sclite"]
    return None


needs_sclite = pytest.mark.skipif(_sclite_command() is None, reason="sclite (sctk) is not installed")


def _run_sclite(tmp_path, ids, refs, hyps, report):
    for name, texts in (("ref.trn", refs), ("hyp.trn", hyps)):
        lines = [f"{text} ({utt})\n" for utt, text in zip(ids, texts)]
        (tmp_path / name).write_text("".join(lines), encoding="utf-8")
    command = _sclite_command() + ["-r", str(tmp_path / "ref.trn"), "trn", "-h", str(tmp_path / "hyp.trn"), "trn"]
    proc = subprocess.run(command + ["-i", "rm", "-o", report, "stdout"], capture_output=True, text=True, check=True)
    return proc.stdout


def _sclite_totals(tmp_path, ids, refs, hyps):
    """sclite's raw Sum row: Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err."""
    out = _run_sclite(tmp_path, ids, refs, hyps, "rsum")
    match = re.search(r"\|\s*Sum\s*\|([^|]*)\|([^|]*)\|", out)
    return [int(x) for x in (match.group(1) + match.group(2)).split()]


def _our_totals(score):
    return [score.num_sents, score.num_ref_tokens, score.corr, score.sub, score.dele, score.ins,
            score.num_errors, score.sent_errors]  # fmt: skip


@needs_sclite
def test_hand_examples_match_sclite(tmp_path):
    cases = [(r, h) for r, h, _ in WORD_CASES if r]  # sclite wants a non-empty reference
    ids = [f"spk{i % 2}-utt{i}" for i in range(len(cases))]
    refs, hyps = [r for r, _ in cases], [h for _, h in cases]
    utts = align_utterances(ids, refs, hyps)
    assert _sclite_totals(tmp_path, ids, refs, hyps) == _our_totals(CorpusScore.from_utterances(utts))
    pralign = [line.rstrip() for line in _run_sclite(tmp_path, ids, refs, hyps, "pralign").splitlines()]
    for utt in utts:
        i = pralign.index(f"id: ({utt.utt_id})")
        ours = format_result_txt([utt], CorpusScore.from_utterances([utt]), "word").splitlines()
        j = ours.index(f"id: ({utt.utt_id})")
        assert ours[j : j + 5] == pralign[i : i + 5]


@needs_sclite
def test_random_set_matches_sclite(tmp_path):
    """Sentences, words and errors agree with sclite; S/D/I may differ only by its tie-breaking.

    With the same error total, N and hyp length fixed, sclite's counts can differ from ours only
    by k * (Corr +1, Sub -2, Del +1, Ins +1): it prefers D+I to two substitutions (see
    evaluation.metrics). Hypotheses are references with random edits, as ASR errors are.
    """
    rng = random.Random(1234)
    vocab = [f"w{i}" for i in range(30)]
    ids, refs, hyps = [], [], []
    for i in range(60):
        ref = [rng.choice(vocab) for _ in range(rng.randint(1, 12))]
        hyp = []
        for word in ref:
            r = rng.random()
            if r > 0.07:  # else deleted
                hyp.append(rng.choice(vocab) if r < 0.14 else word)
            if rng.random() < 0.07:
                hyp.append(rng.choice(vocab))
        ids.append(f"spk{i % 3}-utt{i:03d}")
        refs.append(" ".join(ref))
        hyps.append(" ".join(hyp))
    ours = _our_totals(CorpusScore.from_utterances(align_utterances(ids, refs, hyps)))
    theirs = _sclite_totals(tmp_path, ids, refs, hyps)
    assert theirs[:2] == ours[:2] and theirs[6:] == ours[6:]
    k = theirs[2] - ours[2]
    assert k >= 0
    assert [t - o for t, o in zip(theirs[2:6], ours[2:6])] == [k, -2 * k, k, k]


# ---- asr score --ref --hyp: your own transcripts -------------------------------------------------
REF = "a1 the cat sat on the mat\na2 hello world\na3 it is 5 o'clock\n"
HYP = "a1 the cat sat on mat mat\na2 Hello, world!\na3 it's five o'clock\n"


def _texts(tmp_path):
    (tmp_path / "ref.txt").write_text(REF)
    (tmp_path / "hyp.txt").write_text(HYP)
    return tmp_path / "ref.txt", tmp_path / "hyp.txt"


def test_score_own_transcripts_against_hand_counts(tmp_path, capsys):
    from asr.cli.main import main

    ref, hyp = _texts(tmp_path)
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "out")]) == 0
    # a1: the -> mat (1 sub); a2: case and punctuation normalized away; a3: it -> it's, 5 -> five (2 sub), is deleted
    assert "%WER 33.33 [ 4 / 12, 0 ins, 1 del, 3 sub ]" in capsys.readouterr().out
    result = (tmp_path / "out" / "result.txt").read_text()
    assert "Sum/Avg" in result and "a3" in result
    # Whisper's normalizer: "it's" -> "it is", "five" -> "5": only a1's error is left
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "w"), "--normalizer", "whisper"]) == 0
    assert "%WER 8.33 [ 1 / 12, 0 ins, 0 del, 1 sub ]" in capsys.readouterr().out
    # characters: a CER over the same files
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "c"), "--unit", "char"]) == 0
    assert "%CER" in capsys.readouterr().out


def test_score_arguments_are_checked(tmp_path):
    from asr.cli.main import main

    ref, _ = _texts(tmp_path)
    assert main(["score", "--ref", str(ref)]) == 1  # --hyp missing
    with pytest.raises(SystemExit):
        main(["score", "--ref", str(ref), "--hyp", str(ref), "--normalizer", "klingon"])


def test_sclite_report_agrees_with_our_counts(tmp_path):
    from asr.cli.main import main
    from evaluation.sctk import find_sclite

    if find_sclite() is None:
        pytest.skip("sclite (Debian sctk) not installed")
    ref, hyp = _texts(tmp_path)
    assert main(["score", "--ref", str(ref), "--hyp", str(hyp), "--out", str(tmp_path / "out"), "--sclite"]) == 0
    summary = (tmp_path / "out" / "sclite" / "hyp.trn.sys").read_text()
    row = next(line for line in summary.splitlines() if "Sum/Avg" in line)
    numbers = [float(x) for x in row.replace("|", " ").split()[1:]]
    assert numbers[:2] == [3, 12]  # sentences, words
    assert numbers[2:7] == pytest.approx([66.7, 25.0, 8.3, 0.0, 33.3], abs=0.05)  # Corr Sub Del Ins Err
