"""Image-conditioned ASR: WER per test condition with the true picture, another scene's picture and none.

Each decode dir was written by ``asr decode-llm --image-table ...`` (decode_info.json records the
picture table, ``"image"``: ``utt2image``, ``utt2image_mismatch`` or ``none``, the dump dir it
decoded, whose name is the condition: ``test_clean``, ``test_0db``, ..., and the picture guidance
weight, noted under the table) and scored by ``asr score``.
Each row also keeps every utterance's error count per picture, for a paired bootstrap over the
utterances (:func:`bootstrap_table`, Bisani & Ney 2004): the 95% interval of true/none and of
WER other - WER true, so that a ratio of 0.76 against a target of 0.75 can be read as the noise it is.
Where the dump dir has ``masked_words`` (utt -> 0-based indices of the words a noise burst covers),
the share of those words the hypothesis got right (aligned to an identical word) is reported too.

    asr results --by-image --plot exp/joint/images.png --out exp/joint/IMAGES.md exp/joint/decode_*

| Condition   | #Wrd | WER true | WER other | WER none | true/none | masked words right (true/other/none) |
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import jiwer
import numpy as np

from evaluation.normalize import get_normalizer
from evaluation.score import SCORES_FILE, read_scores, read_text, score_texts
from evaluation.summary import _expand

VARIANTS = {"utt2image": "true", "utt2image_mismatch": "other", "none": "none"}
ORDER = ["test_clean", "test_10db", "test_5db", "test_0db", "test_masked"]


@dataclass
class ConditionRow:
    condition: str
    num_words: int = 0
    wer: dict[str, float] = field(default_factory=dict)  # variant -> WER (%)
    masked: dict[str, tuple[int, int]] = field(default_factory=dict)  # variant -> (right, total) masked words
    guidance: dict[str, float] = field(default_factory=dict)  # variant -> picture guidance weight (0: plain)
    utt_errors: dict[str, dict[str, int]] = field(default_factory=dict)  # variant -> utt -> errors (edit distance)
    utt_words: dict[str, int] = field(default_factory=dict)  # utt -> reference words
    classes: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)  # variant -> class -> (right, total)


def _hits(r: list[str], h: list[str]) -> set[int]:
    """Indices of the reference words aligned to an identical hypothesis word."""
    hit: set[int] = set()
    if not r or not h:
        return hit
    for chunk in jiwer.process_words(" ".join(r), " ".join(h)).alignments[0]:
        if chunk.type == "equal":
            hit.update(range(chunk.ref_start_idx, chunk.ref_end_idx))
    return hit


def masked_words_right(ref: dict[str, str], hyp: dict[str, str], masked: dict[str, str], normalizer) -> tuple[int, int]:
    """(masked reference words the hypothesis has at the aligned position, masked words) over the utterances."""
    right = total = 0
    for utt, idx in masked.items():
        if utt not in ref:
            continue
        r, h = normalizer(ref[utt]).split(), normalizer(hyp.get(utt, "")).split()
        if not r:
            continue
        indices = [int(i) for i in idx.split()]
        total += len(indices)
        hit = _hits(r, h)
        right += sum(i in hit for i in indices)
    return right, total


def read_word_classes(path: str | Path) -> dict[str, str]:
    """word -> class group from a ``word_classes`` table (class -> its words, as mini_vis stage 0 writes
    it); classes named ``<group>_<variant>`` (``shape_one``, ``shape_many``) are reported as ``<group>``."""
    word_class: dict[str, str] = {}
    for name, words in read_text(path).items():
        group = name.split("_", 1)[0]
        for w in words.split():
            if word_class.setdefault(w, group) != group:
                raise ValueError(f"{path}: {w!r} is in two classes ({word_class[w]}, {group})")
    return word_class


def class_words_right(
    ref: dict[str, str], hyp: dict[str, str], word_class: dict[str, str], normalizer
) -> dict[str, tuple[int, int]]:
    """class group -> (its reference words the hypothesis has at the aligned position, its reference
    words); words of no class count under ``other``."""
    counts: dict[str, list[int]] = {}
    for utt, text in ref.items():
        r, h = normalizer(text).split(), normalizer(hyp.get(utt, "")).split()
        hit = _hits(r, h)
        for i, w in enumerate(r):
            c = counts.setdefault(word_class.get(w, "other"), [0, 0])
            c[0] += i in hit
            c[1] += 1
    return {k: (v[0], v[1]) for k, v in counts.items()}


def collect(
    decode_dirs: str | Path | Iterable[str | Path], normalizer: str = "english", word_classes: str | Path | None = None
) -> list[ConditionRow]:
    """One row per condition (dump dir name) over the scored decode dirs; variants by picture table.
    ``word_classes``: a class table (:func:`read_word_classes`); each row then counts the words of
    every class the hypotheses got right (``ConditionRow.classes``)."""
    norm = get_normalizer(normalizer)
    word_class = read_word_classes(word_classes) if word_classes is not None else None
    rows: dict[str, ConditionRow] = {}
    for path in map(Path, _expand(decode_dirs)):
        info_file = path / "decode_info.json"
        if not info_file.is_file():
            raise ValueError(f"{path}: no decode_info.json (not an `asr decode-llm` dir)")
        info = json.loads(info_file.read_text(encoding="utf-8"))
        if "data_dir" not in info:
            raise ValueError(f"{info_file}: no data_dir (decoded by an older version): decode again")
        variant = VARIANTS.get(info.get("image", "none"), info.get("image"))
        data_dir = Path(info["data_dir"])
        condition = data_dir.name
        if not (path / SCORES_FILE).is_file():
            raise ValueError(f"{path}: no {SCORES_FILE}: score it first (asr score {path})")
        unit, score = read_scores(path)
        record = json.loads((path / SCORES_FILE).read_text(encoding="utf-8"))
        row = rows.setdefault(condition, ConditionRow(condition))
        if variant in row.wer:
            raise ValueError(f"{path}: a second decode dir of {condition} with the {variant} picture")
        row.num_words = score.num_ref_tokens
        row.wer[variant] = score.err_rate
        row.guidance[variant] = float(info.get("picture_guidance", 0.0))
        ref, hyp = read_text(path / "ref"), read_text(path / "hyp")
        utts, _ = score_texts(ref, hyp, unit, record.get("normalizer", normalizer))
        row.utt_errors[variant] = {u.utt_id: u.num_errors for u in utts}
        for u in utts:
            if row.utt_words.setdefault(u.utt_id, len(u.ref_tokens)) != len(u.ref_tokens):
                raise ValueError(
                    f"{path}: utterance {u.utt_id!r} has {len(u.ref_tokens)} reference words here but "
                    f"{row.utt_words[u.utt_id]} in another decode dir of {condition}"
                )
        if word_class is not None:
            row.classes[variant] = class_words_right(ref, hyp, word_class, norm)
        if (data_dir / "masked_words").is_file():
            row.masked[variant] = masked_words_right(ref, hyp, read_text(data_dir / "masked_words"), norm)
    for variant in ("true", "other"):  # one table, one decoding rule per picture variant
        weights = {r.guidance[variant] for r in rows.values() if variant in r.guidance}
        if len(weights) > 1:
            raise ValueError(
                f"the {variant} picture's decode dirs mix picture guidance weights {sorted(weights)}: give the dirs of one weight"
            )
    return sorted(rows.values(), key=lambda r: (ORDER.index(r.condition) if r.condition in ORDER else len(ORDER), r.condition))


def guidance_note(rows: list[ConditionRow]) -> str:
    """A line under the table when the pictures were decoded with picture guidance ('' otherwise)."""
    weights = {v: w for r in rows for v, w in r.guidance.items() if w}
    if not weights:
        return ""
    which = " and ".join(f"{v} ({w:g})" for v, w in sorted(weights.items(), key=lambda x: ["true", "other"].index(x[0])))
    return (
        f"\nPictures decoded with picture guidance (`asr decode-llm --picture-guidance W`): {which}; "
        f"no picture: plain decoding.\n"
    )


def format_table(rows: list[ConditionRow]) -> str:
    variants = ["true", "other", "none"]
    header = ["Condition", "#Wrd"] + [f"WER {v}" for v in variants] + ["true/none", "masked words right (true / other / none)"]
    lines = ["| " + " | ".join(header) + " |", "| :-- | --: | --: | --: | --: | --: | :-- |"]
    for r in rows:
        wer = [f"{r.wer[v]:.2f}" if v in r.wer else "-" for v in variants]
        ratio = f"{r.wer['true'] / r.wer['none']:.2f}" if {"true", "none"} <= set(r.wer) and r.wer["none"] > 0 else "-"
        masked = " / ".join(f"{r.masked[v][0]}/{r.masked[v][1]}" if v in r.masked else "-" for v in variants) if r.masked else ""
        lines.append("| " + " | ".join([r.condition, str(r.num_words), *wer, ratio, masked]) + " |")
    return "\n".join(lines) + "\n" + guidance_note(rows)


def common_utterances(errors: dict[str, dict[str, int]], words: dict[str, int]) -> list[str]:
    """The utterances decoded with every variant in ``errors`` (variant -> utt -> errors), sorted."""
    return sorted(set(words).intersection(*[set(e) for e in errors.values()]))


def paired_bootstrap(
    errors: dict[str, dict[str, int]], words: dict[str, int], num_resamples: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Paired bootstrap over the utterances decoded with every variant in ``errors`` (variant -> utt -> errors).

    Each resample draws as many utterances as there are, with replacement, and recomputes the
    statistics on it; returned: name -> (value on the full set, 2.5th, 97.5th percentile), for
    ``true/none`` (a ratio of error counts on the same utterances) and ``other-true`` (WER points),
    each where both variants are present. Resamples whose denominator is 0 are left out of the ratio.
    """
    common = common_utterances(errors, words)
    if not common or num_resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(common), size=(num_resamples, len(common)))
    n_words = np.array([words[u] for u in common])
    err = {v: np.array([e[u] for u in common]) for v, e in errors.items()}
    total_words = n_words[draws].sum(axis=1)
    out = {}
    if {"true", "none"} <= set(err) and err["none"].sum() > 0:
        t, n = err["true"][draws].sum(axis=1), err["none"][draws].sum(axis=1)
        ratio = t[n > 0] / n[n > 0]
        out["true/none"] = (err["true"].sum() / err["none"].sum(), *np.percentile(ratio, [2.5, 97.5]))
    if {"true", "other"} <= set(err) and n_words.sum() > 0:
        diff = 100.0 * (err["other"][draws].sum(axis=1) - err["true"][draws].sum(axis=1)) / np.maximum(total_words, 1)
        out["other-true"] = (100.0 * (err["other"].sum() - err["true"].sum()) / n_words.sum(), *np.percentile(diff, [2.5, 97.5]))
    return out


def bootstrap_table(rows: list[ConditionRow], num_resamples: int = 1000, seed: int = 0) -> str:
    """95% intervals of true/none and of WER other - WER true per condition (paired bootstrap), markdown."""
    lines = [
        f"Paired bootstrap over the utterances ({num_resamples} resamples, 95% intervals):",
        "",
        "| Condition | #Utt | true/none | WER other - WER true |",
        "| :-- | --: | :-- | :-- |",
    ]
    any_row = False
    for r in rows:
        stats = paired_bootstrap(r.utt_errors, r.utt_words, num_resamples, seed)
        if not stats:
            continue
        any_row = True
        cells = []
        for name, fmt in (("true/none", "{:.2f} [{:.2f}, {:.2f}]"), ("other-true", "{:+.2f} [{:+.2f}, {:+.2f}]")):
            cells.append(fmt.format(*stats[name]) if name in stats else "-")
        num_utts = len(common_utterances(r.utt_errors, r.utt_words))
        lines.append(f"| {r.condition} | {num_utts} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" if any_row else ""


def class_table(rows: list[ConditionRow]) -> str:
    """Per condition, the share (%) of each word class's reference words recognised with the true
    picture / another scene's / none, markdown ('' without class counts)."""
    variants = ["true", "other", "none"]
    names = sorted({c for r in rows for cl in r.classes.values() for c in cl}, key=lambda c: (c == "other", c))
    if not names:
        return ""
    lines = [
        "Words recognised per word class, % of the class's reference words (true / other / none):",
        "",
        "| Condition | " + " | ".join(names) + " |",
        "| :-- | " + " | ".join(":--" for _ in names) + " |",
    ]
    for r in rows:
        if not r.classes:
            continue
        cells = []
        for c in names:
            shares = [
                f"{100.0 * r.classes[v][c][0] / r.classes[v][c][1]:.0f}"
                if v in r.classes and r.classes[v].get(c, (0, 0))[1]
                else "-"
                for v in variants
            ]
            total = next((r.classes[v][c][1] for v in variants if v in r.classes and c in r.classes[v]), 0)
            cells.append(" / ".join(shares) + f" ({total})")
        lines.append(f"| {r.condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows: list[ConditionRow], out: str | Path, title: str = "Image-conditioned ASR") -> Path:
    """WER per condition, one line per picture variant, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [r.condition.removeprefix("test_") for r in rows]
    styles = {
        "true": ("tab:green", "o", "true picture"),
        "other": ("tab:orange", "s", "another scene's picture"),
        "none": ("tab:gray", "^", "no picture"),
    }
    for v, (color, marker, label) in styles.items():
        xs = [i for i, r in enumerate(rows) if v in r.wer]
        if xs:
            ax.plot(xs, [rows[i].wer[v] for i in xs], marker=marker, color=color, label=label)
    ax.set_xticks(range(len(rows)), names)
    ax.set_xlabel("test condition")
    ax.set_ylabel("WER (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out
