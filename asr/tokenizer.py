"""Output units: a sentencepiece model (BPE, unigram or char) trained on the training transcripts.

Id 0 is ``<blank>`` (CTC blank and padding), id 1 ``<unk>``; there are no BOS/EOS pieces: a
CIF model emits exactly one unit per fire and needs neither.
"""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm

from asr.data.datadir import read_table
from asr.io_utils import atomic_path, write_text_atomic

BLANK_ID = 0


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
