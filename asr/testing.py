"""Aids for the toolkit's tests and quick runs, kept apart from its models: tiny random GLM / GLM-4
models with a small byte-level BPE tokenizer and a GLM-4-style chat template. ``LlmConfig``'s names
``"tiny-glm"`` / ``"tiny-glm4"`` build them once into the cache (:mod:`asr.models.llm`); they write
nonsense, fast.
"""

from __future__ import annotations

from pathlib import Path

import torch

from asr.models.llm import _build_atomically

GLM_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
]
# GLM-4's chat format: [gMASK]<sop>, then "<|role|>\ncontent" per message, then "<|assistant|>\n"
GLM4_CHAT_TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Training text for the tiny tokenizer (written for this project)
TINY_TEXT = """\
Hello world. This is a small story about speech, listening and the machines that learn to hear.
Say hello to the world, hello to the sea and hello to the morning: hello world, hello world.
A speech recognizer turns sound into words. First it listens to the audio and cuts it into short
frames of ten milliseconds. Each frame becomes a list of numbers that describe the energy in many
frequency bands. An encoder reads these numbers and writes a new sequence that is shorter and
richer. Then a small network decides where one word ends and the next one starts, and it keeps
one vector for every token. A language model reads those vectors as if they were its own words,
and it writes the text that it believes was spoken. When the model is right, the text matches
what the person said. When it is wrong, we count the words it added, the words it dropped and the
words it changed, and we call the total the word error rate.
The quick brown fox jumps over the lazy dog. She sells sea shells by the sea shore. One, two,
three, four, five, six, seven, eight, nine, ten. Good morning, good evening and good night.
The weather today is cold and clear, with a light wind from the north and some rain later in the
afternoon. Please open the window, close the door and turn on the light in the kitchen. The train
leaves the station at nine in the morning and comes back at six in the evening. We read a book,
we wrote a letter and we walked along the river until the sun went down behind the hills.
Children play in the park while their parents talk on the bench under the old oak tree. A cup of
tea, a slice of bread and a bowl of soup make a simple and warm lunch. The small boat sailed
across the lake and the birds flew over the water. Every voice is different: some are high, some
are low, some speak fast and some speak slowly, and a good recognizer must understand them all.
Noise from the street, music in the room and the echo of a large hall make the task harder.
Training needs many hours of audio with the right text, and testing needs voices the model has
never heard before. Hello again, world, and thank you for listening to this little story.
"""


def _train_tiny_tokenizer(vocab_size: int):
    """A byte-level BPE trained on :data:`TINY_TEXT`, wrapped with GLM special tokens and template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=GLM_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(TINY_TEXT.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens=GLM_SPECIAL_TOKENS[1:],
        chat_template=GLM4_CHAT_TEMPLATE,
        padding_side="left",
    )


def _tiny_glm_model(
    family: str, vocab_size: int, hidden_size: int, num_layers: int, num_heads: int, eos_ids: list[int], pad_id: int
):
    """A randomly initialised GlmForCausalLM / Glm4ForCausalLM (call after seeding torch)."""
    from transformers import Glm4Config, Glm4ForCausalLM, GlmConfig, GlmForCausalLM

    config_cls, model_cls = {"glm": (GlmConfig, GlmForCausalLM), "glm4": (Glm4Config, Glm4ForCausalLM)}[family]
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2),
        head_dim=hidden_size // num_heads,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        pad_token_id=pad_id,
        eos_token_id=eos_ids,
    )
    return model_cls(config)


def build_tiny_glm(
    out_dir: str | Path,
    family: str = "glm",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 400,
    seed: int = 0,
) -> Path:
    """Write a random, seeded GLM (``family="glm"``) or GLM-4 (``"glm4"``) model + tokenizer to ``out_dir``.

    ``vocab_size`` is the tokenizer's target size; the model's vocabulary equals the tokenizer's
    length. The folder is built elsewhere and renamed into place; an existing ``out_dir`` is an error.
    """
    if family not in ("glm", "glm4"):
        raise ValueError(f"tiny GLM family must be 'glm' or 'glm4', not {family!r}")
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty")

    def build(tmp: Path) -> None:
        tokenizer = _train_tiny_tokenizer(vocab_size)
        eos_ids = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|user|>", "<|observation|>"])
        torch.manual_seed(seed)
        model = _tiny_glm_model(family, len(tokenizer), hidden_size, num_layers, num_heads, eos_ids, tokenizer.pad_token_id)
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    return _build_atomically(out_dir, build)
