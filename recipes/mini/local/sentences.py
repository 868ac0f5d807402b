"""Plain English sentences for the synthetic corpus, harvested from text on this machine.

Sources (each optional; a missing one is skipped with a warning):

* ``harvard``: the 720 Harvard sentences, ``harvard_sentences.txt`` beside this file.
* ``fortunes``: Debian ``fortunes`` (``/usr/share/games/fortunes``), ``%``-separated quips.
* ``wordnet``: example sentences quoted in WordNet glosses (Debian ``wordnet-base``).
* ``bible``: the King James Bible through the ``bible`` program (Debian ``bible-kjv``),
  split into clauses at ``. ; : ? !``.

Every candidate goes through :class:`SentenceFilter` (4-20 words, only letters, apostrophes and
basic punctuation, no digits, no abbreviations or all-capital words, most words in the
``wamerican`` word list). What is kept has two forms: ``tts`` (the sentence with its punctuation,
given to the synthesizer for natural prosody) and ``text`` (the transcript: lowercase words,
punctuation removed except word-internal apostrophes, see :func:`normalize_text`).

Splits are by sentence: a stable hash of the transcript and the seed puts each sentence in the
``test``, ``dev`` or ``train`` bucket, so test sentences never occur in train, and a bigger corpus
made with the same seed extends a smaller one instead of reshuffling it.
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
HARVARD_FILE = HERE / "harvard_sentences.txt"
FORTUNE_DIR = Path("/usr/share/games/fortunes")
WORDNET_DIR = Path("/usr/share/wordnet")
DICTIONARY = Path("/usr/share/dict/american-english")
SOURCES = ("harvard", "fortunes", "wordnet", "bible")

# Characters a raw sentence may hold (after typographic quotes were made ASCII).
_ALLOWED = re.compile(r"^[A-Za-z' ,.;:?!\"-]+$")
# Abbreviations a synthesizer expands to words the transcript would not hold.
ABBREVIATIONS = frozenset(
    "mr mrs ms dr st jr sr vs etc eg ie prof lt capt sgt mt ft inc ltd vol pp cf approx dept govt "
    "jan feb apr aug sept oct nov pm".split()
)
# Single letters that are words in their own right; others would be spelled out.
SINGLE_LETTER_WORDS = frozenset({"a", "i", "o"})


def ascii_quotes(s: str) -> str:
    """Replace typographic quotes and dashes by their ASCII forms."""
    return (
        s.replace("\u2019", "'")
        .replace("\u2018", "'")
        .replace("\u201c", '"')
        .replace("\u201d", '"')
        .replace("\u2014", " -- ")
        .replace("\u2013", "-")
    )


def normalize_text(s: str) -> str:
    """Transcript form: lowercase words, punctuation dropped, word-internal apostrophes kept.

    Hyphens and dashes separate words ("well-known" -> "well known"); apostrophes at a word's
    edge are dropped ("'tis" -> "tis", "dogs'" -> "dogs").

    >>> normalize_text("It's a well-known fact -- isn't it?  'Tis true.")
    "it's a well known fact isn't it tis true"
    """
    s = ascii_quotes(s).lower()
    s = re.sub(r"[^a-z']+", " ", s)
    words = (w.strip("'") for w in s.split())
    return " ".join(w for w in words if w)


def tts_text(s: str) -> str:
    """The sentence as given to a synthesizer: ASCII, quotes dropped, dashes as commas, one space."""
    s = ascii_quotes(s).replace('"', " ")
    s = re.sub(r"\s*--+\s*", ", ", s)
    s = re.sub(r"\s+", " ", s).strip()
    return s.strip(" ,;:")


def load_dictionary(path: str | Path = DICTIONARY) -> frozenset[str]:
    """Lowercased entries of a one-word-per-line word list (empty set when missing)."""
    path = Path(path)
    if not path.is_file():
        log.warning("word list %s is missing: the dictionary check accepts every word", path)
        return frozenset()
    return frozenset(w.strip().lower() for w in path.read_text(encoding="utf-8", errors="replace").splitlines() if w.strip())


@dataclass
class SentenceFilter:
    """Decides whether a raw sentence is plain English fit for synthesis.

    ``min_dict_fraction`` is the share of words that must be in ``dictionary`` (a word
    ``x's`` counts when ``x`` is there); with an empty dictionary the check is off.
    """

    dictionary: frozenset[str]
    min_words: int = 4
    max_words: int = 20
    min_dict_fraction: float = 0.9

    def reject_reason(self, raw: str) -> str | None:
        """Why ``raw`` is rejected, or ``None`` when it is accepted."""
        s = ascii_quotes(raw).strip()
        if not s:
            return "empty"
        if re.search(r"[0-9]", s):
            return "digit"
        if not _ALLOWED.match(s):
            return "character"
        tokens = [t.strip("'\".,;:?!-") for t in re.split(r"[\s-]+", s)]
        tokens = [t for t in tokens if t]
        for t in tokens:
            if len(t) > 1 and t.upper() == t:
                return "all-caps"  # acronyms are spelled out by synthesizers
            if any(c.isupper() for c in t[1:]):
                return "mixed-case"
            if t.count("'") > 1:
                return "apostrophe"
        words = normalize_text(s).split()
        if not self.min_words <= len(words) <= self.max_words:
            return "length"
        for w in words:
            if w in ABBREVIATIONS:
                return "abbreviation"
            if len(w) == 1 and w not in SINGLE_LETTER_WORDS:
                return "letter"
        if self.dictionary:
            known = sum(1 for w in words if w in self.dictionary or (w.endswith("'s") and w[:-2] in self.dictionary))
            if known < self.min_dict_fraction * len(words):
                return "dictionary"
        return None

    def accept(self, raw: str) -> bool:
        return self.reject_reason(raw) is None


# ---------------------------------------------------------------- sources

_SPLIT = re.compile(r"(?<=[.?!])\s+")


def split_sentences(paragraph: str, clause_marks: str = "") -> list[str]:
    """Split running text at ``. ? !`` followed by a space (and at ``clause_marks`` if given).

    A period after a known abbreviation ("Mr. Smith") does not end a sentence.
    """
    text = re.sub(r"\s+", " ", paragraph).strip()
    pieces: list[str] = []
    for piece in _SPLIT.split(text):
        last = re.search(r"\b(\w+)\.$", pieces[-1]) if pieces else None
        if last and last.group(1).lower() in ABBREVIATIONS:
            pieces[-1] += " " + piece
        else:
            pieces.append(piece)
    if clause_marks:
        pattern = re.compile(r"(?<=[" + re.escape(clause_marks) + r"])\s+")
        pieces = [c for p in pieces for c in pattern.split(p)]
    return [p.strip() for p in pieces if p.strip()]


def harvard_sentences(path: Path = HARVARD_FILE) -> Iterator[str]:
    """The Harvard sentences, in list order."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            yield line.strip()


def fortune_sentences(directory: Path = FORTUNE_DIR) -> Iterator[str]:
    """Sentences of every fortune cookie file (attribution lines ``-- Author`` dropped)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix == "" and (p.parent / (p.name + ".dat")).exists())
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        for cookie in text.split("\n%\n"):
            lines = []
            for line in cookie.splitlines():
                if re.match(r"^\s*--", line):
                    break  # attribution: the rest is author and source
                lines.append(line)
            yield from split_sentences(" ".join(lines))


def wordnet_examples(directory: Path = WORDNET_DIR) -> Iterator[str]:
    """Example sentences quoted in WordNet glosses (``| gloss; "example"``)."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = directory / f"data.{pos}"
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("  "):
                    continue  # licence header
                _, _, gloss = line.partition(" | ")
                for example in re.findall(r'"([^"]+)"', gloss):
                    yield from split_sentences(example)


def bible_sentences() -> Iterator[str]:
    """Clauses of the King James Bible as printed by ``bible`` (LORD/GOD read as Lord/God)."""
    exe = shutil.which("bible")
    if exe is None:
        raise FileNotFoundError("the 'bible' program (Debian bible-kjv) is not installed")
    out = subprocess.run([exe, "-l0", "gen1:1-rev22:21"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        m = re.match(r"^\s+\d+ (.*)$", line)
        if not m:
            continue  # book and chapter headings
        verse = re.sub(r"\bLORD\b", "Lord", re.sub(r"\bGOD\b", "God", m.group(1)))
        yield from split_sentences(verse, clause_marks=";:")


SOURCE_READERS = {
    "harvard": harvard_sentences,
    "fortunes": fortune_sentences,
    "wordnet": wordnet_examples,
    "bible": bible_sentences,
}


# ---------------------------------------------------------------- pool and splits


@dataclass(frozen=True)
class Sentence:
    """One kept sentence: ``text`` is the transcript, ``tts`` what the synthesizer reads."""

    text: str
    tts: str
    source: str


def stable_fraction(key: str, seed: int) -> float:
    """A number in [0, 1) fixed by ``key`` and ``seed`` (independent of Python's hash salt)."""
    digest = hashlib.sha1(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def harvest(sources: dict[str, int | None], sfilter: SentenceFilter, seed: int) -> tuple[list[Sentence], dict]:
    """Read, filter and deduplicate the listed sources (name -> cap on kept sentences, None = all).

    Returns the sentences in a seeded random order, and per-source statistics
    (candidates, kept, reject reasons). Sources are read in the order of :data:`SOURCES`, so a
    sentence occurring in two sources is credited to the earlier one.
    """
    seen: set[str] = set()
    kept: list[Sentence] = []
    stats: dict[str, dict] = {}
    for name in SOURCES:
        if name not in sources:
            continue
        cap = sources[name]
        st = {"candidates": 0, "kept": 0, "duplicates": 0, "rejected": {}}
        stats[name] = st
        mine: list[Sentence] = []
        try:
            for raw in SOURCE_READERS[name]():
                st["candidates"] += 1
                reason = sfilter.reject_reason(raw)
                if reason is not None:
                    st["rejected"][reason] = st["rejected"].get(reason, 0) + 1
                    continue
                text = normalize_text(raw)
                if text in seen:
                    st["duplicates"] += 1
                    continue
                seen.add(text)
                mine.append(Sentence(text=text, tts=tts_text(raw), source=name))
        except (OSError, subprocess.CalledProcessError) as exc:
            log.warning("sentence source %r skipped: %s", name, exc)
            st["error"] = str(exc)
        if cap is not None and len(mine) > cap:
            # keep a seeded random subset; the dropped ones stay in `seen` so no other source re-adds them
            mine = sorted(mine, key=lambda s: stable_fraction("cap:" + s.text, seed))[:cap]
        st["kept"] = len(mine)
        kept.extend(mine)
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise ValueError(f"unknown sentence sources {sorted(unknown)}; known: {list(SOURCES)}")
    kept.sort(key=lambda s: stable_fraction("order:" + s.text, seed))
    return kept, stats


def split_by_sentence(pool: Iterable[Sentence], test_percent: float, dev_percent: float, seed: int) -> dict[str, list[Sentence]]:
    """Assign each sentence to ``test``, ``dev`` or ``train`` by a stable hash of its transcript."""
    out: dict[str, list[Sentence]] = {"test": [], "dev": [], "train": []}
    for s in pool:
        u = stable_fraction("split:" + s.text, seed) * 100
        bucket = "test" if u < test_percent else "dev" if u < test_percent + dev_percent else "train"
        out[bucket].append(s)
    return out


def take(sentences: list[Sentence], n_utts: int, utts_per_sentence: int, seed: int, name: str) -> list[Sentence]:
    """Sentences for ``n_utts`` utterances (each sentence read ``utts_per_sentence`` times).

    When the bucket is too small its sentences are reused (in a reshuffled order) with a warning.
    """
    need = -(-n_utts // max(1, utts_per_sentence))
    if not sentences:
        raise ValueError(f"no sentences for {name}")
    if need > len(sentences):
        log.warning("%s: needs %d sentences but only %d are available; reusing some", name, need, len(sentences))
    out: list[Sentence] = []
    rnd = random.Random(f"{seed}:{name}:reuse")
    order = list(sentences)
    while len(out) < need:
        out.extend(order[: need - len(out)])
        rnd.shuffle(order)
    return out
