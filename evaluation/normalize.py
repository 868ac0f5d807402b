"""Text normalizers applied to both reference and hypothesis before scoring.

A normalizer is any callable ``str -> str``. Four are provided, by name:

``english``
    Unicode NFKC, lowercase, punctuation removed (see :func:`remove_punctuation`),
    whitespace collapsed. Numbers are left as written: "3" and "three" are different words.
``chinese``
    The same punctuation rule (NFKC also turns full-width ``，！？（）`` into their ASCII forms,
    and ``。、《》【】“”`` are Unicode punctuation already), Latin letters lowercased, then every
    space touching a CJK character is removed: "我 爱 Python 编程。" -> "我爱python编程".
    Spaces between Latin words stay, so "machine learning" keeps its two words.
``whisper``
    Whisper's ``EnglishTextNormalizer`` (shipped in transformers): numbers spelled as digits,
    contractions and fillers handled as in Whisper's paper, so WERs compare with published
    LibriSpeech results. (Its British -> American spelling table ships with Whisper's tokenizer
    files, not offline here: without it spellings are left as they are.)
``none``
    The text unchanged.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

Normalizer = Callable[[str], str]

_APOSTROPHES = "'\u2019"  # ASCII apostrophe and the right single quotation mark
# Han (with radicals and extensions), kana, bopomofo, hangul syllables, and 々〆〇.
_CJK = (
    "\u2e80-\u2fdf\u3005-\u3007\u3040-\u30ff\u3100-\u312f\u3190-\u31ff\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0003134f"
)
_SPACE_TOUCHING_CJK = re.compile(rf"\s+(?=[{_CJK}])|(?<=[{_CJK}])\s+")


def remove_punctuation(text: str) -> str:
    """Remove Unicode punctuation (categories P*), with two exceptions.

    Dashes (category Pd: ``-``, ``–``, ``—``) become spaces, so "well-known" is two words.
    An apostrophe between two letters or digits is kept as ``'`` ("don't", "don’t" -> "don't");
    any other apostrophe is removed ("'quoted'" -> "quoted"). All remaining punctuation is
    deleted without a space, so "u.s." -> "us" and "1,000" -> "1000".
    """
    out = []
    for i, ch in enumerate(text):
        category = unicodedata.category(ch)
        if ch in _APOSTROPHES:
            if 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum():
                out.append("'")
        elif category == "Pd":
            out.append(" ")
        elif not category.startswith("P"):
            out.append(ch)
    return "".join(out)


class EnglishNormalizer:
    """NFKC, lowercase, :func:`remove_punctuation`, single spaces, no leading/trailing space."""

    name = "english"

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        return " ".join(remove_punctuation(text).split())


class ChineseNormalizer:
    """NFKC, lowercase, :func:`remove_punctuation`, then no space next to a CJK character."""

    name = "chinese"

    def __call__(self, text: str) -> str:
        text = unicodedata.normalize("NFKC", text).lower()
        text = " ".join(remove_punctuation(text).split())
        return _SPACE_TOUCHING_CJK.sub("", text)


class NoNormalizer:
    """Leaves the text as it is (tokenization still splits on whitespace)."""

    name = "none"

    def __call__(self, text: str) -> str:
        return text


class WhisperNormalizer:
    """Whisper's English normalizer (``transformers``' ``EnglishTextNormalizer``)."""

    name = "whisper"

    def __init__(self, spelling_mapping: dict[str, str] | None = None):
        from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

        self._normalize = EnglishTextNormalizer(spelling_mapping or {})

    def __call__(self, text: str) -> str:
        return " ".join(self._normalize(text).split())


NORMALIZERS: dict[str, type] = {cls.name: cls for cls in (EnglishNormalizer, WhisperNormalizer, ChineseNormalizer, NoNormalizer)}


def get_normalizer(name: str) -> Normalizer:
    """Return a new normalizer by name: ``english``, ``whisper``, ``chinese`` or ``none``."""
    try:
        return NORMALIZERS[name]()
    except KeyError:
        raise ValueError(f"unknown normalizer {name!r}; choose one of {', '.join(NORMALIZERS)}") from None
