"""Output units of the stage-1 recognizer, two kinds behind one interface:

- :class:`Tokenizer`: a sentencepiece model (BPE, unigram or char) trained on the training
  transcripts (``<prefix>.model``);
- :class:`LlmUnits`: the LLM's own tokens ("speech -> language"): the tokens of the LLM's
  tokenizer that occur in the training transcripts (``<prefix>.llm/``). Stage 1 then predicts what
  the LLM reads, and its classifier can be tied to the LLM's frozen input embeddings.

Either way id 0 is ``<blank>`` (CTC blank and padding) and id 1 ``<unk>``; there are no BOS/EOS
units: a CIF model emits exactly one unit per fire and needs neither.
:func:`load_tokenizer` opens either kind from a prefix, a file or a dir.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import sentencepiece as spm

from asr.data.datadir import read_table
from asr.io_utils import atomic_path, write_text_atomic

BLANK_ID = 0
UNK_ID = 1


def train_tokenizer(
    text_file: str | Path,
    out_prefix: str | Path,
    vocab_size: int = 500,
    model_type: str = "bpe",
    character_coverage: float = 1.0,
) -> Path:
    """Train sentencepiece on a Kaldi ``text`` file (``utt words...``). Writes ``<prefix>.model`` and ``.vocab``."""
    sentences = list(read_table(text_file).values())
    if not sentences:
        raise ValueError(f"{text_file}: no transcripts to train a tokenizer on")
    out_prefix = Path(out_prefix)
    out_prefix.parent.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        character_coverage=character_coverage,
        pad_id=BLANK_ID,
        pad_piece="<blank>",
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        hard_vocab_limit=model_type != "char",
        minloglevel=2,
    )
    with atomic_path(out_prefix.with_suffix(".model")) as tmp:
        tmp.write_bytes(model.getvalue())
    tok = Tokenizer(out_prefix.with_suffix(".model"))
    write_text_atomic(out_prefix.with_suffix(".vocab"), "".join(f"{tok.sp.id_to_piece(i)} {i}\n" for i in range(len(tok))))
    return out_prefix.with_suffix(".model")


class Tokenizer:
    """Text <-> unit ids through a trained sentencepiece model."""

    def __init__(self, model_path: str | Path):
        self.model_path = Path(model_path)
        self.sp = spm.SentencePieceProcessor(model_file=str(model_path))

    def __len__(self) -> int:
        return self.sp.get_piece_size()

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    def encode(self, text: str) -> list[int]:
        return self.sp.encode(text, out_type=int)

    def decode(self, ids: list[int]) -> str:
        return self.sp.decode([i for i in ids if i != BLANK_ID])

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.sp.id_to_piece(i) for i in ids]

    word_marker = "▁"

    def save_to(self, model_dir: str | Path) -> Path:
        """Copy into a model dir as ``tokenizer.model``."""
        dst = Path(model_dir) / "tokenizer.model"
        shutil.copyfile(self.model_path, dst)
        return dst


# ---- the LLM's own tokens ----------------------------------------------------------------------
LLM_UNITS_FILE = "units.json"


def _word_marker(hf_tokenizer) -> str:
    """The character that opens a word in the LLM's pieces ("Ġ" byte-level BPE, "▁" sentencepiece)."""
    pieces = hf_tokenizer.convert_ids_to_tokens(hf_tokenizer.encode(" hello world", add_special_tokens=False))
    last = pieces[-1] if pieces else ""
    return last[0] if last and not last.startswith("w") else " "


def build_llm_units(text_file: str | Path, llm: str, out_prefix: str | Path, hf_tokenizer=None) -> Path:
    """Units = the LLM tokens used by the transcripts of ``text_file``. Writes ``<prefix>.llm/``.

    The dir holds ``units.json`` (the LLM reference and the unit -> LLM token id table) and the
    LLM's tokenizer files, so decoding needs no LLM weights.
    """
    sentences = list(read_table(text_file).values())
    if not sentences:
        raise ValueError(f"{text_file}: no transcripts to build units from")
    if hf_tokenizer is None:
        from asr.models.llm import LlmConfig, load_llm

        hf_tokenizer = load_llm(LlmConfig(name_or_path=llm)).tokenizer
    used: set[int] = set()
    for sentence in sentences:
        used.update(hf_tokenizer.encode(" " + sentence, add_special_tokens=False))
    out_dir = Path(f"{out_prefix}.llm")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf_tokenizer.save_pretrained(tmp / "llm_tokenizer")
    doc = {"llm": llm, "word_marker": _word_marker(hf_tokenizer), "llm_ids": sorted(used)}
    write_text_atomic(tmp / LLM_UNITS_FILE, json.dumps(doc) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


class LlmUnits:
    """Units 2.. are LLM token ids (``llm_ids[unit - 2]``); 0 blank, 1 tokens the table lacks."""

    def __init__(self, units_dir: str | Path):
        from transformers import AutoTokenizer

        self.model_path = Path(units_dir)
        doc = json.loads((self.model_path / LLM_UNITS_FILE).read_text(encoding="utf-8"))
        self.llm, self.word_marker = doc["llm"], doc["word_marker"]
        self.llm_ids: list[int] = doc["llm_ids"]
        self._unit_of = {t: u + 2 for u, t in enumerate(self.llm_ids)}
        self.hf = AutoTokenizer.from_pretrained(self.model_path / "llm_tokenizer")

    def __len__(self) -> int:
        return len(self.llm_ids) + 2

    @property
    def blank_id(self) -> int:
        return BLANK_ID

    def encode(self, text: str) -> list[int]:
        return [self._unit_of.get(t, UNK_ID) for t in self.hf.encode(" " + text, add_special_tokens=False)]

    def to_llm_ids(self, ids: list[int]) -> list[int]:
        return [self.llm_ids[i - 2] for i in ids if i >= 2]

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(self.to_llm_ids(ids)).strip()

    def pieces(self, ids: list[int]) -> list[str]:
        return [self.hf.convert_ids_to_tokens(self.llm_ids[i - 2]) if i >= 2 else ("<blank>", "<unk>")[i] for i in ids]

    def save_to(self, model_dir: str | Path) -> Path:
        """Copy into a model dir as ``tokenizer.llm/``."""
        dst = Path(model_dir) / "tokenizer.llm"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.model_path, dst)
        return dst


# ---- Whisper's tokens ----------------------------------------------------------------------------
def build_whisper_units(out_prefix: str | Path, whisper: str = "packaged", hf_tokenizer=None) -> Path:
    """Units = all of Whisper's tokens (the decoder of a Whisper C-Former predicts them over its
    whole vocabulary). Writes ``<prefix>.whisper/``: ``units.json`` and Whisper's tokenizer files."""
    if hf_tokenizer is None:
        from asr.models.whisper_cformer import load_whisper_tokenizer

        hf_tokenizer = load_whisper_tokenizer(whisper)
    out_dir = Path(f"{out_prefix}.whisper")
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    hf_tokenizer.save_pretrained(tmp / "whisper_tokenizer")
    write_text_atomic(tmp / LLM_UNITS_FILE, json.dumps({"kind": "whisper", "whisper": whisper}) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir


class WhisperUnits:
    """Unit ids are Whisper's token ids; texts are encoded as Whisper writes them (a leading space,
    case and punctuation kept). No blank: Whisper's <|endoftext|> stands in for the interface."""

    def __init__(self, units_dir: str | Path):
        from transformers import WhisperTokenizer

        self.model_path = Path(units_dir)
        doc = json.loads((self.model_path / LLM_UNITS_FILE).read_text(encoding="utf-8"))
        self.whisper = doc["whisper"]
        self.hf = WhisperTokenizer.from_pretrained(self.model_path / "whisper_tokenizer")
        self.word_marker = "Ġ"

    def __len__(self) -> int:
        return len(self.hf)

    @property
    def blank_id(self) -> int:
        return self.hf.eos_token_id

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(" " + text.strip(), add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=True).strip()

    def pieces(self, ids: list[int]) -> list[str]:
        return self.hf.convert_ids_to_tokens(ids)

    def save_to(self, model_dir: str | Path) -> Path:
        """Copy into a model dir as ``tokenizer.whisper/``."""
        dst = Path(model_dir) / "tokenizer.whisper"
        shutil.rmtree(dst, ignore_errors=True)
        shutil.copytree(self.model_path, dst)
        return dst


def load_tokenizer(path: str | Path) -> Tokenizer | LlmUnits | WhisperUnits:
    """Open units from a prefix (``exp/tokenizer/units``), a ``.model`` file, a ``.llm`` or a
    ``.whisper`` dir."""
    path = Path(path)
    for candidate in (path, Path(f"{path}.model"), Path(f"{path}.llm"), Path(f"{path}.whisper")):
        if candidate.is_dir() and (candidate / LLM_UNITS_FILE).is_file():
            kind = json.loads((candidate / LLM_UNITS_FILE).read_text(encoding="utf-8")).get("kind", "llm")
            return WhisperUnits(candidate) if kind == "whisper" else LlmUnits(candidate)
        if candidate.is_file():
            return Tokenizer(candidate)
    raise FileNotFoundError(
        f"no tokenizer at {path} (looked for {path}, {path}.model, {path}.llm/{LLM_UNITS_FILE}, {path}.whisper/{LLM_UNITS_FILE})"
    )
