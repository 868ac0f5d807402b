"""Human speech with transcripts that Debian packages put on this machine (the ``test_real`` set).

* ``librivox``: 5 read sentences of *Sense and Sensibility* (pocketsphinx-testdata,
  ``librivox/transcription``).
* ``cards``: 5 short utterances naming playing cards (pocketsphinx-testdata,
  ``cards/cards.transcription``).
* ``alsa``: the channel test sounds of alsa-utils (``/usr/share/sounds/alsa/*.wav``), the text
  being the file name (``Front_Center`` -> "front center"); ``Noise.wav`` holds no speech.
* ``ivr`` (the ``test_real_ivr`` set): the voicemail prompts ``vm-*`` of
  asterisk-core-sounds-en-g722 (one professional voice, 16 kHz G.722), transcripts from
  asterisk-core-sounds-en's ``core-sounds-en.txt.gz``; prompts whose transcript has digits or a
  [bracketed] note are left out. The package's other prompts are in no set.

Transcripts are normalised like the synthetic ones (:func:`sentences.normalize_text`). Each
source is one speaker, ``real_<source>``; utterances are numbered in the order of the source's
own ids.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from sentences import normalize_text

log = logging.getLogger(__name__)

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
ALSA_SOUNDS = Path("/usr/share/sounds/alsa")
ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
REAL_SOURCES = ("librivox", "cards", "alsa")
IVR_SOURCES = ("ivr",)
_NO_SPEECH = {"noise"}


@dataclass(frozen=True)
class RealUtterance:
    speaker: str
    key: str  # the source's own id, kept for reference
    path: Path
    text: str  # normalized (sentences.normalize_text)
    written: str = ""  # as the source writes it (case and punctuation)


def _sphinx_transcription(path: Path) -> list[tuple[str, str]]:
    """``<s> words </s> (id)`` lines -> ``[(id, words)]``."""
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^\s*(?:<s>)?(.*?)(?:</s>)?\s*\(([^()]+)\)\s*$", line)
        if m:
            out.append((m.group(2).strip(), m.group(1).strip()))
    return out


def _asterisk_prompts(path: Path) -> list[tuple[str, str]]:
    """``vm-*: text`` lines of the asterisk transcripts, without digits or [bracketed] notes."""
    import gzip

    out = []
    for line in gzip.open(path, "rt", encoding="utf-8", errors="replace"):
        name, sep, text = line.partition(":")
        name, text = name.strip(), text.strip()
        if sep and re.fullmatch(r"vm-[\w-]+", name) and text and not re.search(r"[0-9\[\]]", text):
            out.append((name, text))
    return out


def read_source(name: str) -> list[RealUtterance]:
    """The utterances of one source (empty, with a warning, when its files are not installed)."""
    spk = f"real_{name}"
    items: list[tuple[str, Path, str]] = []
    if name == "librivox":
        base = POCKETSPHINX_DATA / "librivox"
        if (base / "transcription").is_file():
            items = [(k, base / f"{k}.wav", t) for k, t in _sphinx_transcription(base / "transcription")]
    elif name == "cards":
        base = POCKETSPHINX_DATA / "cards"
        if (base / "cards.transcription").is_file():
            items = [(k, base / f"{k}.wav", t) for k, t in _sphinx_transcription(base / "cards.transcription")]
    elif name == "alsa":
        if ALSA_SOUNDS.is_dir():
            for wav in sorted(ALSA_SOUNDS.glob("*.wav")):
                text = wav.stem.replace("_", " ")
                if text.lower() not in _NO_SPEECH:
                    items.append((wav.stem, wav, text))
    elif name == "ivr":
        if ASTERISK_TRANSCRIPTS.is_file() and ASTERISK_SOUNDS.is_dir():
            items = [(k, ASTERISK_SOUNDS / f"{k}.g722", t) for k, t in _asterisk_prompts(ASTERISK_TRANSCRIPTS)]
    else:
        raise ValueError(f"unknown real speech source {name!r}; known: {REAL_SOURCES + IVR_SOURCES}")
    out = []
    for key, path, text in sorted(items):
        norm = normalize_text(text)
        if path.is_file() and norm:
            out.append(RealUtterance(spk, key, path, norm, " ".join(text.split())))
        else:
            log.warning("real speech: %s %s skipped (missing audio or empty text)", name, key)
    if not out:
        log.warning("real speech: source %r has no usable utterances on this machine", name)
    return out
