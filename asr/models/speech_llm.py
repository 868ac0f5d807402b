"""X-LLM stage 2: speech as a foreign language for a frozen LLM.

    feats (B, T, F) -> frozen stage-1 model (encoder + C-Former)   token vectors (B, N, D), N ~ LLM tokens
                    -> S-Adapter                                    speech embeddings (B, N, H)
    LLM input, per utterance (H = the LLM's hidden size):
        [prompt prefix] <speech> [speech embeddings] </speech> [prompt suffix] [transcript] <eos>
         `-- text, from the chat template, split where the speech goes --'     `-- labels --'
    -> frozen LLM (optionally with LoRA) -> next-token loss on the transcript tokens only.

The prompt is the LLM tokenizer's chat template where it has one (a user turn holding the
instruction and the speech, then the assistant turn), else plain text; the same code path serves
the GLM family, SmolLM2 and any causal LM. Decoding: batched ``generate`` on left-padded input
embeddings with beam search, KV cache and a token budget bounded by the CIF token count; with
LLM-token units the stage-1 classifier can vote on each output token (``cif_weight``, see
:mod:`asr.models.cif_fusion`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from asr.config import dataclass_from_dict
from asr.data.batching import IGNORE_ID
from asr.io_utils import load_weights, read_model_config, save_config_and_weights
from asr.io_utils import save_weights as save_weights_file
from asr.models.auto import load_stage1
from asr.models.cif_asr import CifAsrModel, TiedUnitClassifier
from asr.models.cif_fusion import CifFusion, unit_llm_id_table
from asr.models.frozen_llm import FrozenLlmMixin
from asr.models.llm import LORA_DIR, LORA_WEIGHTS, LlmConfig, LoadedLlm, load_llm, load_lora, save_lora_config, split_lora
from asr.models.s_adapter import SAdapter, SAdapterConfig
from asr.models.whisper_cformer import WhisperCFormer
from asr.tokenizer import WhisperUnits, load_tokenizer

KIND = "speech_llm"
CONFIG_NAME = "speech_llm.json"  # a stage-2 dir: adapter, prompt and LLM configs
WEIGHTS_NAME = "adapter.safetensors"  # its trained tensors outside LoRA (the S-Adapter); dirs of old: adapter.pt
# with LoRA on, lora/ holds the LoRA tensors in peft's adapter format (PeftModel.from_pretrained reads it)
STAGE1_LINK = "stage1.json"  # in a stage-2 dir: {"stage1": <the stage-1 model dir>}


def slot(name: str) -> str:
    """The marker where a slot's embeddings go in a rendered prompt (``slot("speech")``)."""
    return f"\x00{name.upper()}\x00"


SPEECH_SLOT = slot("speech")  # where the speech embeddings go in the rendered prompt
_SLOT_RE = re.compile("\x00([A-Z_]+)\x00")


@dataclass
class PromptConfig:
    instruction: str = "Transcribe the speech."
    system: str | None = "You are a speech recognizer."  # None: the template's default (if any)
    speech_start: str = "<speech>"
    speech_end: str = "</speech>"


@dataclass
class SpeechLlmConfig:
    llm: LlmConfig = field(default_factory=LlmConfig)
    adapter: SAdapterConfig = field(default_factory=SAdapterConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    # what the S-Adapter reads of a Whisper C-Former stage 1: "parallel", its parallel pass's states;
    # "read", the states of Whisper's pretrained decoder reading the speech (WhisperCFormer.transcribe)
    stage1_decoding: str = "parallel"

    @classmethod
    def from_dict(cls, d: dict) -> SpeechLlmConfig:
        cfg = dataclass_from_dict(cls, d, "speech_llm config")
        if cfg.stage1_decoding not in ("parallel", "read"):
            raise ValueError(f"speech_llm config: stage1_decoding must be 'parallel' or 'read', not {cfg.stage1_decoding!r}")
        return cfg


class SlotPrompt:
    """A user turn with named slots for embeddings, rendered once into token ids.

    ``content`` holds :func:`slot` markers (``f"{slot('image')} Transcribe {slot('speech')}"``);
    ``pieces`` is the rendered prompt as token-id lists and slot names in order, e.g.
    ``[ids, "image", ids, "speech", ids]``: everything before the first slot, between slots and
    after the last one (the assistant turn's start) is text. The tokenizer's chat template is used
    where it has one, else plain text ending in ``Transcript:``.
    """

    def __init__(self, tokenizer, content: str, system: str | None):
        if getattr(tokenizer, "chat_template", None):
            messages = [{"role": "system", "content": system}] if system else []
            messages.append({"role": "user", "content": content})
            text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:
            text = f"{content}\nTranscript:"
            if tokenizer.bos_token:
                text = tokenizer.bos_token + text
        parts = _SLOT_RE.split(text)  # text, NAME, text, NAME, ..., text
        self.pieces: list[list[int] | str] = []
        for i, part in enumerate(parts):
            self.pieces.append(part.lower() if i % 2 else tokenizer.encode(part, add_special_tokens=False))
        self.slots: list[str] = [p for p in self.pieces if isinstance(p, str)]
        self.eos_id: int = tokenizer.eos_token_id
        self.tokenizer = tokenizer

    def target_ids(self, text: str) -> list[int]:
        """The transcript as the assistant's answer, ended by eos."""
        return self.tokenizer.encode(text, add_special_tokens=False) + [self.eos_id]


class Prompt(SlotPrompt):
    """Token ids around the speech: ``prefix + <speech> | speech | </speech> + suffix``."""

    def __init__(self, tokenizer, config: PromptConfig):
        super().__init__(tokenizer, f"{config.instruction}\n{config.speech_start}{SPEECH_SLOT}{config.speech_end}", config.system)
        self.prefix: list[int] = self.pieces[0]
        self.suffix: list[int] = self.pieces[2]


@dataclass
class AssembledBatch:
    inputs_embeds: torch.Tensor  # (B, S, H)
    attention_mask: torch.Tensor  # (B, S) 1 = real
    labels: torch.Tensor | None  # (B, S) IGNORE_ID except on transcript tokens
    position_ids: torch.Tensor  # (B, S)


def assemble(
    embed: nn.Embedding,
    prompt: Prompt,
    speech: list[torch.Tensor],
    targets: list[list[int]] | None,
    left_pad: bool,
    with_prefix: bool = True,
) -> AssembledBatch:
    """Concatenate prompt embeddings, speech embeddings (N_i, H) and target embeddings per utterance, then pad.

    ``targets`` None: inference (no labels, no transcript in the input). Position ids count real
    tokens only, so left padding does not shift them. ``with_prefix`` False leaves the prompt
    prefix out (its keys/values come from a cache) and starts the position ids after it.
    """
    if with_prefix:
        return assemble_slots(embed, prompt, [{"speech": sp} for sp in speech], targets, left_pad)
    bare = [[], "speech", prompt.suffix]  # the prefix comes from the cache
    return assemble_slots(
        embed, prompt, [{"speech": sp} for sp in speech], targets, left_pad, pieces=bare, position_offset=len(prompt.prefix)
    )


def assemble_slots(
    embed: nn.Embedding,
    prompt: SlotPrompt,
    slots: list[dict[str, torch.Tensor]],
    targets: list[list[int]] | None,
    left_pad: bool,
    pieces: list | None = None,
    position_offset: int = 0,
) -> AssembledBatch:
    """One row per example: the prompt's text pieces embedded, each slot filled with that example's
    (N, H) embeddings (a slot may hold zero rows), then the target; rows padded to one length."""
    some = next(t for row in slots for t in row.values())
    device, dtype = some.device, embed.weight.dtype
    pieces = prompt.pieces if pieces is None else pieces
    text = {i: embed(torch.tensor(p, dtype=torch.long, device=device)) for i, p in enumerate(pieces) if not isinstance(p, str)}
    rows, label_rows = [], []
    for b, filled in enumerate(slots):
        missing = [p for p in pieces if isinstance(p, str) and p not in filled]
        if missing:
            raise ValueError(f"example {b}: no embeddings for prompt slot(s) {missing}")
        parts = [text[i] if i in text else filled[p].to(dtype) for i, p in enumerate(pieces)]
        labels = [IGNORE_ID] * sum(x.shape[0] for x in parts)
        if targets is not None:
            parts.append(embed(torch.tensor(targets[b], device=device)))
            labels += targets[b]
        rows.append(torch.cat(parts))
        label_rows.append(labels)
    S = max(r.shape[0] for r in rows)
    B, H = len(rows), rows[0].shape[1]
    x = rows[0].new_zeros(B, S, H)
    mask = torch.zeros(B, S, dtype=torch.long, device=device)
    lab = torch.full((B, S), IGNORE_ID, dtype=torch.long, device=device)
    for b, (r, lbl) in enumerate(zip(rows, label_rows)):
        sl = slice(S - r.shape[0], S) if left_pad else slice(0, r.shape[0])
        x[b, sl], mask[b, sl] = r, 1
        lab[b, sl] = torch.tensor(lbl, device=device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0) + position_offset
    return AssembledBatch(x, mask, lab if targets is not None else None, positions)


def token_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of the labelled positions whose next token the LLM's argmax gets right (no gradient).
    logits (B, S, V), labels (B, S) with IGNORE_ID where there is nothing to predict."""
    gold = labels[:, 1:]
    valid = gold != IGNORE_ID
    return (((logits[:, :-1].argmax(-1) == gold) & valid).sum().float() / valid.sum().clamp(min=1)).detach()


def strip_repetition(ids: list[int], max_ngram: int = 20) -> list[int]:
    """Cut a generation loop: the first n-gram repeated back to back more often than speech repeats.

    Short n-grams (n < 4: "no no no", "very very") may come 3 times in a row, longer phrases twice;
    the copies beyond that are cut.
    """
    for start in range(len(ids)):
        for n in range(1, max_ngram + 1):
            allowed = 3 if n < 4 else 2
            gram = ids[start : start + n]
            if len(gram) < n:
                break
            if all(ids[start + k * n : start + (k + 1) * n] == gram for k in range(1, allowed + 1)):
                return ids[: start + n * allowed]
    return ids


class SpeechLlm(FrozenLlmMixin, nn.Module):
    """Frozen stage-1 model + trainable S-Adapter + frozen LLM (LoRA optional)."""

    def __init__(self, config: SpeechLlmConfig, stage1: CifAsrModel | WhisperCFormer, llm: LoadedLlm, units=None):
        """``units``: the stage-1 units; Whisper's tokens give the expected-embedding adapter its table
        (each Whisper token as the LLM's embedding of its text), LLM-token units make CIF fusion possible."""
        super().__init__()
        self.config = config
        self.stage1 = stage1.eval()
        for p in self.stage1.parameters():
            p.requires_grad_(False)
        self.stage1_decoding = None  # a CIF model has one way; a Whisper C-Former: the config's
        if isinstance(stage1, WhisperCFormer):
            self.stage1_decoding = config.stage1_decoding
            if config.stage1_decoding == "read":
                stage1.load_reader()
        elif config.stage1_decoding != "parallel":
            raise ValueError(f"stage1_decoding {config.stage1_decoding!r} needs a whisper_cformer stage 1")
        self.llm = llm.model
        self.tokenizer = llm.tokenizer
        self.prompt = Prompt(llm.tokenizer, config.prompt)
        classifier = getattr(self.stage1, "classifier", None)
        table = classifier.table().detach() if isinstance(classifier, TiedUnitClassifier) else None
        if table is not None and table.shape[1] != llm.hidden_size:
            table = None  # stage 1 was tied to another LLM: its table is no use here
        if table is None and isinstance(units, WhisperUnits) and config.adapter.mode == "expected_embedding":
            table = whisper_units_llm_table(units, llm, stage1.config.vocab_size)
        self.adapter = SAdapter(config.adapter, stage1.hidden_dim, llm.hidden_size, unit_embeddings=table)
        self.device = next(self.llm.parameters()).device
        self.units = None  # the stage-1 units (set_units): decoders turn CIF tokens into text with them
        self.unit_llm_ids: torch.Tensor | None = None  # (U,) LLM token id per stage-1 unit, for CIF fusion
        self.init_frozen_llm()
        self.stage1.to(self.device)
        self.adapter.to(self.device)
        if units is not None:
            self.set_units(units)

    def train(self, mode: bool = True):
        super().train(mode)
        self.stage1.eval()  # frozen: no dropout, no SpecAugment
        if not any(p.requires_grad for p in self.llm.parameters()) and not _checkpointing(self.llm):
            self.llm.eval()  # frozen: no dropout (gradient checkpointing needs train mode to act)
        return self

    def stage1_units(self):
        """The stage-1 units; a clear error where the stage-1 dir had none."""
        if self.units is None:
            raise FileNotFoundError(
                "the stage-1 model dir of this speech LLM has no tokenizer (tokenizer.model or "
                "tokenizer.llm/): CIF tokens cannot be written as text"
            )
        return self.units

    def set_units(self, units) -> None:
        """Stage-1 units that are LLM tokens (:class:`asr.tokenizer.LlmUnits`) make CIF fusion possible;
        other units (sentencepiece) leave it off."""
        self.units = units
        self.unit_llm_ids = unit_llm_id_table(units) if hasattr(units, "llm_ids") else None

    # ---- speech -> LLM input embeddings --------------------------------------------------------
    def speech_embeddings(self, feats: torch.Tensor, feat_lengths: torch.Tensor) -> tuple[list[torch.Tensor], dict]:
        """feats (B, T, F) -> one (N_i, H) tensor per utterance, plus the stage-1 result (CIF tokens, fires)."""
        feats, feat_lengths = feats.to(self.device), feat_lengths.to(self.device)
        with torch.no_grad():
            rec = self.stage1.transcribe(feats, feat_lengths, self.stage1_decoding)
            hidden = rec["hidden"]  # (B, N, D)
        dtype = self.llm.get_input_embeddings().weight.dtype
        if hidden.shape[1]:
            emb = self.adapter(hidden, rec["logits"]).to(dtype)
        else:  # no token in the whole batch: one zero position each, as for an empty utterance in a batch
            emb = torch.zeros(
                hidden.shape[0], 1, self.llm.get_input_embeddings().weight.shape[1], dtype=dtype, device=hidden.device
            )
        lengths = rec["token_lengths"].tolist()
        return [emb[b, : max(1, n)] for b, n in enumerate(lengths)], rec

    # ---- training ------------------------------------------------------------------------------
    def forward(self, feats, feat_lengths, target_ids, target_lengths) -> dict[str, torch.Tensor]:
        """target_ids (B, L) LLM token ids of the transcripts + eos, padded with IGNORE_ID."""
        speech, _ = self.speech_embeddings(feats, feat_lengths)
        targets = [target_ids[b, : int(target_lengths[b])].tolist() for b in range(target_ids.shape[0])]  # (L_i,)
        out, labels, mask = teacher_forced(self, speech, targets)
        return {
            "loss": out.loss,
            "acc": token_accuracy(out.logits, labels),
            "positions": mask.sum().float(),
        }  # LLM positions in the batch

    def prefix_cache_allowed(self) -> bool:
        """The prefix's keys/values are constant only with the whole LLM frozen (LoRA changes them) and
        without activation checkpointing (which recomputes layers)."""
        return self.cache_prefix and not any(p.requires_grad for p in self.llm.parameters()) and not _checkpointing(self.llm)

    # ---- decoding ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        feats: torch.Tensor,
        feat_lengths: torch.Tensor,
        num_beams: int = 1,
        max_new_factor: float = 1.5,
        max_new_extra: int = 8,
        cif_weight: float = 0.0,
    ) -> list[dict]:
        """Transcribe a batch. Per utterance: text, LLM token ids, the stage-1 CIF result and flags.

        ``cif_weight`` > 0 adds that times the CIF classifier's log-probability of each token at its
        position (needs LLM-token units: :meth:`set_units`)."""
        speech, rec = self.speech_embeddings(feats, feat_lengths)
        batch = assemble(self.llm.get_input_embeddings(), self.prompt, speech, None, left_pad=True)
        return self.generate_from(batch, rec, num_beams, max_new_factor, max_new_extra, cif_weight)

    @torch.no_grad()
    def generate_from(
        self,
        batch: AssembledBatch,
        rec: dict,
        num_beams: int = 1,
        max_new_factor: float = 1.5,
        max_new_extra: int = 8,
        cif_weight: float = 0.0,
        processors: list | None = None,
    ) -> list[dict]:
        """:meth:`generate` from an assembled prompt batch (any prompt holding the speech) and its stage-1 result;
        ``processors``: logits processors applied before CIF fusion (e.g. picture guidance)."""
        # each utterance's token budget follows its own CIF count; the batch runs to the largest
        budgets = [int(math.ceil(max_new_factor * int(n))) + max_new_extra for n in rec["token_lengths"]]
        budget = max(budgets)
        processors = list(processors or [])
        if cif_weight:
            if self.unit_llm_ids is None:
                raise ValueError(
                    "cif_weight needs a stage-1 model whose units are this LLM's tokens "
                    "(tokenizer model_type: llm); this one's are not"
                )
            processors.append(
                CifFusion(
                    rec["logits"], rec["token_lengths"], self.unit_llm_ids, self.prompt.eos_id, cif_weight, num_beams=num_beams
                )
            )
        out = self.llm.generate(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            max_new_tokens=budget,
            num_beams=num_beams,
            do_sample=False,
            eos_token_id=self.prompt.eos_id,
            pad_token_id=self.tokenizer.pad_token_id,
            logits_processor=processors or None,
        )
        results = []
        for b in range(out.shape[0]):
            ids = out[b, : budgets[b]].tolist()
            if self.prompt.eos_id in ids:
                ids = ids[: ids.index(self.prompt.eos_id)]
            ids = [i for i in ids if i != self.tokenizer.pad_token_id]
            cut = strip_repetition(ids)
            text = normalize_spaces(self.tokenizer.decode(cut, skip_special_tokens=True))
            results.append(
                {
                    "text": text,
                    "llm_ids": cut,
                    "repetition_cut": len(cut) < len(ids),
                    "cif_tokens": rec["tokens"][b],
                    "fire_frames": rec["fire_frames"][b],
                    "alphas": rec["alphas"][b, : rec["frame_lengths"][b]].tolist(),
                }
            )
        return results

    # ---- persistence ---------------------------------------------------------------------------
    def saved_state(self) -> dict[str, torch.Tensor]:
        """What a model dir keeps: the S-Adapter and LoRA tensors (trained now or not), and any other
        trainable tensor (an unfrozen LLM's)."""
        trainable = set(self.trainable_state_dict())
        return {k: v for k, v in self.state_dict().items() if k.startswith("adapter.") or "lora_" in k or k in trainable}

    def save_pretrained(self, out_dir: str | Path) -> None:
        """``speech_llm.json`` (with ``kind``), ``adapter.safetensors`` and, with LoRA on, ``lora/`` in
        peft's adapter format; the stage-1 model and the LLM are referenced, not copied."""
        out_dir = Path(out_dir)
        state, lora = split_lora(self.saved_state())
        save_config_and_weights(out_dir, CONFIG_NAME, asdict(self.config), WEIGHTS_NAME, state, kind=KIND)
        if lora:
            save_lora_config(self.llm, out_dir / LORA_DIR)
            save_weights_file(out_dir / LORA_DIR / LORA_WEIGHTS, lora)

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, stage1_dir: str | Path, llm_overrides: dict | None = None) -> SpeechLlm:
        model_dir = Path(model_dir)
        d = read_model_config(model_dir / CONFIG_NAME, KIND)
        d["llm"] = {**d["llm"], **(llm_overrides or {})}
        config = SpeechLlmConfig.from_dict(d)
        try:
            units = load_tokenizer(Path(stage1_dir) / "tokenizer")
        except FileNotFoundError:  # a bare stage-1 dir: the LLM decodes, but no CIF text or fusion
            units = None
        model = cls(config, load_stage1(stage1_dir), load_llm(config.llm), units)
        state = load_weights(model_dir, stem="adapter")  # adapter.safetensors, or adapter.pt (with LoRA inside)
        if (model_dir / LORA_DIR).is_dir():
            load_lora(model.llm, model_dir / LORA_DIR)
            state = {**{k: v for k, v in model.state_dict().items() if "lora_" in k}, **state}
        model.load_trainable_state_dict(state)
        return model.eval()


def teacher_forced(model: FrozenLlmMixin, embeddings: list[torch.Tensor], targets: list[list[int]]):
    """One teacher-forced pass of a frozen-LLM model (speech LLM, image caption model): its prompt around
    each example's embeddings (N_i, H), then the target token ids, through the LLM, reusing the prompt
    prefix's cached keys/values where allowed. -> (LLM output with the loss, labels (B, S), attention mask)."""
    embed = model.llm.get_input_embeddings()
    cache = model.prefix_cache(len(embeddings))
    batch = assemble(embed, model.prompt, embeddings, targets, left_pad=False, with_prefix=cache is None)
    mask = batch.attention_mask
    if cache is not None:  # the prompt prefix is the same for every example: its keys/values are cached
        mask = torch.cat([mask.new_ones(mask.shape[0], len(model.prompt.prefix)), mask], dim=1)
    out = model.llm(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=mask,
        position_ids=batch.position_ids,
        labels=batch.labels,
        use_cache=cache is not None,
        **model.cache_kwargs(cache),
    )
    return out, batch.labels, mask


def whisper_units_llm_table(units: WhisperUnits, llm: LoadedLlm, num_units: int) -> torch.Tensor:
    """(num_units, H): each Whisper token as the mean LLM input embedding of the LLM's tokens of its
    text (both byte-level BPEs: mostly one LLM token each); special and timestamp tokens get zeros."""
    weight = llm.model.get_input_embeddings().weight.detach().float()  # (V_llm, H)
    n_text = min(units.hf.eos_token_id, num_units)  # Whisper's ids below <|endoftext|> are text
    texts = [units.hf.convert_tokens_to_string([piece]) for piece in units.hf.convert_ids_to_tokens(list(range(n_text)))]
    table = weight.new_zeros(num_units, weight.shape[1])
    for i, ids in enumerate(llm.tokenizer(texts, add_special_tokens=False)["input_ids"]):
        if ids:
            table[i] = weight[ids].mean(0)
    return table


def _checkpointing(model: nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on (the property's name changed in transformers 5.2x)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def normalize_spaces(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def write_stage1_link(model_dir: Path, stage1: str) -> None:
    """Record the stage-1 model dir: an absolute path, or one relative to ``model_dir`` (exports)."""
    (model_dir / STAGE1_LINK).write_text(json.dumps({"stage1": stage1}) + "\n")


def stage1_dir_of(model_dir: Path) -> Path:
    """The stage-1 model dir a stage-2 dir names (relative paths are relative to the stage-2 dir)."""
    stage1 = Path(json.loads((Path(model_dir) / STAGE1_LINK).read_text())["stage1"])
    return stage1 if stage1.is_absolute() else Path(model_dir) / stage1
