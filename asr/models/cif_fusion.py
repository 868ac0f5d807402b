"""CIF fusion: the stage-1 CIF classifier votes on every token the LLM writes.

With LLM-token units (``tokenizer: {model_type: llm}``) each CIF fire is one LLM token, so the
LLM's i-th output token and the i-th CIF position describe the same stretch of speech. During
``generate`` (greedy or beam search) this logits processor adds, at output step i,

    weight * log p_CIF(token | position i)

to the LLM's log-probabilities. Tokens outside the unit table get the CIF probability of ``<unk>``
(the classifier's "none of my units"); end-of-sequence gets ``floor`` while positions remain and
0 once every position is used, where every other token gets ``floor``: the CIF token count
decides the length unless the LLM is confident enough to overrule it. ``weight`` 0 is plain LLM
decoding; a large weight reproduces CIF greedy search. The score is synchronous by position, like
CTC/attention joint decoding with the alignment given by CIF.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor

BLANK_UNIT, UNK_UNIT = 0, 1


class CifFusion(LogitsProcessor):
    def __init__(
        self,
        unit_logits: torch.Tensor,
        token_lengths: torch.Tensor,
        unit_llm_ids: torch.Tensor,
        eos_id: int,
        weight: float,
        num_beams: int = 1,
        floor: float = -10.0,
    ):
        """unit_logits (B, N, U) stage-1 classifier scores per CIF position; token_lengths (B,) fires per
        utterance; unit_llm_ids (U,) the LLM token id of each unit (-1 for blank and unk)."""
        self.unit_logprobs = unit_logits.float().log_softmax(-1)  # (B, N, U)
        self.token_lengths = token_lengths.to(unit_logits.device)
        self.known = unit_llm_ids >= 0  # (U,)
        self.llm_ids = unit_llm_ids[self.known].to(unit_logits.device)  # (U',)
        self.eos_id, self.weight, self.num_beams, self.floor = eos_id, weight, num_beams, floor

    def vocab_scores(self, step: int, vocab_size: int) -> torch.Tensor:
        """(B, V): the CIF log-probability of each LLM token as output number ``step`` (0-based)."""
        lp, lengths = self.unit_logprobs, self.token_lengths
        batch, positions, _ = lp.shape
        at = lp[:, min(step, positions - 1)] if positions else lp.new_full((batch, len(self.known)), self.floor)  # (B, U)
        scores = at[:, UNK_UNIT : UNK_UNIT + 1].clamp(min=self.floor).expand(batch, vocab_size).clone()  # (B, V)
        scores[:, self.llm_ids] = at[:, self.known].clamp(min=self.floor)
        scores[:, self.eos_id] = self.floor
        done = lengths <= step  # (B,) every CIF position already written
        scores[done] = self.floor
        scores[done, self.eos_id] = 0.0
        return scores

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids (B * beams, step): only the generated tokens (the prompt went in as embeddings)
        fused = self.vocab_scores(input_ids.shape[1], scores.shape[-1]).to(scores.device)
        return scores + self.weight * fused.repeat_interleave(self.num_beams, dim=0).to(scores.dtype)


def unit_llm_id_table(units) -> torch.Tensor:
    """(U,) LLM token id per unit of an :class:`asr.tokenizer.LlmUnits` (-1 for blank and unk)."""
    return torch.tensor([-1, -1] + list(units.llm_ids), dtype=torch.long)
