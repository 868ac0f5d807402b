"""Whisper's own pretrained decoder reading unpadded encoder frames, told by CIF when to stop.

Whisper's decoder reads the encoder well on the real length of an utterance (no padding to
30 s) but, trained only on 30 s windows, it rarely writes <|endoftext|> there: it repeats the
transcript until a length limit ("Front, Center, Front, Center, ..."). The C-Former's CIF pass
counts the words well. The reader joins the two: greedy autoregressive decoding with the frozen
pretrained decoder, cut where the decoder itself finds the end most likely among the prefixes
whose word count lies within ``window`` words of the CIF count:

    encoder_out (B, T, 384), lengths (B,)    cross-attention keys/values computed once, padding masked
    prefix <|startoftranscript|> <|notimestamps|>, then one token per step, self-attention cached
    at each step, for a prefix of n words, |n - W| <= window:
        score = log P(<|endoftext|> | prefix) - penalty * |n - W|
    stop when the decoder writes <|endoftext|> itself (its own end) or the next token would open
    word W + window + 1: the transcript is the best-scored prefix

Output tokens are Whisper's: cased and punctuated text, as Whisper writes it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def token_tables(tokenizer, vocab_size: int) -> tuple[torch.Tensor, list[str]]:
    """Two (V,) tables from one pass over the tokenizer's pieces:

    - word starts, bool: True for the tokens that open a word (a leading space, then a letter or digit);
    - texts: each token's letters and digits, lowercased (byte-level pieces as the tokenizer spells
      them), enough to match words across two transcripts.

    Ids past the tokenizer's vocabulary (Whisper's timestamps) open no word and spell "".
    """
    pieces = tokenizer.convert_ids_to_tokens(list(range(min(len(tokenizer), vocab_size))))
    pieces = [p or "" for p in pieces] + [""] * (vocab_size - len(pieces))
    starts = torch.tensor([p.startswith("Ġ") and any(ch.isalnum() for ch in p[1:]) for p in pieces], dtype=torch.bool)
    # the byte-level space marker "Ġ" is itself a letter to str.isalnum(): drop it first
    return starts, ["".join(ch for ch in p.removeprefix("Ġ") if ch.isalnum()).lower() for p in pieces]


def split_words(tokens: list[int], word_starts: torch.Tensor) -> list[int]:
    """The word index of each token (a word opens at a token that starts a word; the first token
    opens the first word in any case)."""
    out, word = [], 0
    for k, tok in enumerate(tokens):
        word += int(k > 0 and bool(word_starts[tok]))
        out.append(word)
    return out


def count_words(tokens: list[int], word_starts: torch.Tensor) -> int:
    """Words in a token sequence, as :func:`split_words` splits it."""
    return split_words(tokens, word_starts)[-1] + 1 if tokens else 0


class WhisperReader(nn.Module):
    """A frozen pretrained Whisper decoder (transformers ``WhisperDecoder``) decoding greedily over
    unpadded, masked encoder frames with a key/value cache, cut by an expected word count."""

    def __init__(
        self,
        decoder: nn.Module,
        prefix_ids: tuple[int, ...],
        eot_id: int,
        word_starts: torch.Tensor,
        texts: list[str],
    ):
        """``word_starts``, ``texts``: :func:`token_tables` of Whisper's tokenizer."""
        super().__init__()
        self.texts = texts  # matches the read words to another transcript's
        self.decoder = decoder.requires_grad_(False).eval()
        self.prefix_ids = tuple(prefix_ids)
        self.eot_id = eot_id
        self.register_buffer("word_starts", word_starts.bool(), persistent=False)

    def train(self, mode: bool = True) -> WhisperReader:  # always frozen, always in eval mode
        return super().train(False)

    @property
    def embeddings(self) -> torch.Tensor:
        return self.decoder.embed_tokens.weight  # (V, D), also the output projection

    @torch.no_grad()
    def read(
        self,
        encoder_out: torch.Tensor,
        encoder_lengths: torch.Tensor,
        expected_words: torch.Tensor,
        window: int = 4,
        penalty: float = 1.0,
        max_tokens: int | None = None,
        return_states: bool = False,
    ):
        """Greedy decoding of a batch. encoder_out (B, T, D), encoder_lengths (B,), expected_words
        (B,) the CIF pass's word counts -> one list of Whisper token ids per utterance (no specials).
        ``window``, ``penalty``: see the module doc. ``return_states``: also the decoder's final
        states (B, L, D) and log-probabilities (B, L, V) at the steps that wrote the tokens (the state
        at step j predicts token j), L the longest transcript.

        ``max_tokens``: at most this many tokens (default: 4 per expected word + 16, and the
        decoder's position table)."""
        dec = self.decoder
        B, T, _ = encoder_out.shape
        device = encoder_out.device
        W = expected_words.to(device).long()
        limit = int(W.max()) * 4 + 16 if max_tokens is None else max_tokens
        limit = min(limit, dec.embed_positions.weight.shape[0] - len(self.prefix_ids))
        enc = encoder_out.to(self.embeddings.dtype)
        key_mask = (torch.arange(T, device=device)[None, :] < encoder_lengths.to(device)[:, None])[:, None, None, :]
        cross = [
            (
                split_heads(layer.encoder_attn, layer.encoder_attn.k_proj(enc)),
                split_heads(layer.encoder_attn, layer.encoder_attn.v_proj(enc)),
            )
            for layer in dec.layers
        ]
        cache: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(dec.layers)

        special = torch.arange(self.embeddings.shape[0], device=device) > self.eot_id  # never written
        out = torch.full((B, limit), self.eot_id, dtype=torch.long, device=device)
        words = torch.zeros(B, dtype=torch.long, device=device)
        best_score = torch.full((B,), -float("inf"), device=device)
        best_len = torch.full((B,), -1, dtype=torch.long, device=device)
        final_len = torch.full((B,), -1, dtype=torch.long, device=device)  # -1: still reading
        step_ids = torch.tensor(self.prefix_ids, device=device).expand(B, -1)  # (B, P)
        position = 0
        states, logps = [], []
        for t in range(limit + 1):
            state, logp = self._step(step_ids, position, cross, key_mask, cache)  # (B, D), (B, V)
            position += step_ids.shape[1]
            logp = logp.masked_fill(special, -float("inf"))
            reading = final_len < 0
            in_window = (words - W).abs() <= window
            score = logp[:, self.eot_id] - penalty * (words - W).abs()
            better = reading & in_window & (score > best_score)
            best_score = torch.where(better, score, best_score)
            best_len = torch.where(better, torch.full_like(best_len, t), best_len)
            nxt = logp.argmax(-1)  # (B,)
            opens = self.word_starts[nxt] | ((t == 0) & (nxt != self.eot_id))
            own_end = nxt == self.eot_id
            past_window = opens & (words + 1 > W + window)
            stop = reading & (own_end | past_window | (t == limit))
            fallback = torch.where(best_len >= 0, best_len, torch.full_like(best_len, t))
            final_len = torch.where(stop, torch.where(own_end, torch.full_like(final_len, t), fallback), final_len)
            if bool((final_len >= 0).all()) or t == limit:
                break
            out[:, t] = nxt
            if return_states:
                states.append(state)
                logps.append(logp.clamp(min=-1e4))  # specials: -inf -> finite
            words = words + opens.long()
            step_ids = nxt[:, None]
        tokens = [out[b, : int(final_len[b])].tolist() for b in range(B)]
        if not return_states:
            return tokens
        L = max(len(t) for t in tokens)
        if L == 0:
            return tokens, encoder_out.new_zeros(B, 0, enc.shape[-1]), encoder_out.new_zeros(B, 0, self.embeddings.shape[0])
        return tokens, torch.stack(states[:L], 1), torch.stack(logps[:L], 1)

    def _step(self, ids: torch.Tensor, position: int, cross, key_mask: torch.Tensor, cache: list):
        """Feed ids (B, S) at positions position.. -> the last final state (B, D) and the
        log-probabilities of the next token (B, V)."""
        dec = self.decoder
        S = ids.shape[1]
        x = self.embeddings[ids] + dec.embed_positions.weight[position : position + S]
        for i, layer in enumerate(dec.layers):
            attn = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            q, k, v = split_heads(attn, attn.q_proj(h)), split_heads(attn, attn.k_proj(h)), split_heads(attn, attn.v_proj(h))
            if cache[i] is not None:
                k, v = torch.cat([cache[i][0], k], dim=2), torch.cat([cache[i][1], v], dim=2)
            cache[i] = (k, v)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=cache[i][0].shape[2] == S and S > 1, scale=attn.scaling)
            x = x + attn.out_proj(merge_heads(y))
            attn = layer.encoder_attn
            q = split_heads(attn, attn.q_proj(layer.encoder_attn_layer_norm(x)))
            y = F.scaled_dot_product_attention(q, cross[i][0], cross[i][1], attn_mask=key_mask, scale=attn.scaling)
            x = x + attn.out_proj(merge_heads(y))
            x = x + layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(x))))
        h = dec.layer_norm(x[:, -1])  # (B, D)
        return h, (h @ self.embeddings.T).float().log_softmax(-1)


def split_heads(attn, t: torch.Tensor) -> torch.Tensor:
    """(B, S, D) -> (B, H, S, D / H) for a Whisper attention module's heads (also the C-Former's)."""
    B, S, _ = t.shape
    return t.view(B, S, attn.num_heads, attn.head_dim).transpose(1, 2)


def merge_heads(y: torch.Tensor) -> torch.Tensor:
    """(B, H, S, D / H) -> (B, S, D)."""
    B, H, S, d = y.shape
    return y.transpose(1, 2).reshape(B, S, H * d)
