"""Picture guidance: decode a stage-3 model with the picture's effect on every token amplified.

The joint prompt (picture + speech) and stage 2's prompt (speech only) are two conditionings of
one LLM. At output step i this logits processor returns

    log p(y_i | picture, speech, y_<i) + weight * (log p(y_i | picture, speech, y_<i) - log p(y_i | speech, y_<i))

i.e. classifier-free guidance (Ho & Salimans 2022; for LLM prompts Sanchez et al. 2023), where the
"unconditional" model is the same LLM without the picture; visual contrastive decoding uses the same
difference against a distorted image. ``weight`` 0 is plain decoding with the picture; above 0 the
tokens the picture made likelier gain, the ones only the speech supports lose: where the speech is
noisy the picture decides more. The speech-only pass runs beside ``generate`` with its own KV cache,
fed the token ``generate`` chose at each step, so it costs about one more LLM forward per token.
Greedy search only (beam search reorders hypotheses; this pass would have to follow).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import LogitsProcessor

from asr.models.frozen_llm import cache_arg_name, output_cache
from asr.models.speech_llm import AssembledBatch


class PictureGuidance(LogitsProcessor):
    def __init__(self, llm: nn.Module, speech_only: AssembledBatch, weight: float):
        """speech_only: the same utterances under the prompt without picture, left-padded (B, S', H)."""
        if weight < 0:
            raise ValueError(f"picture guidance weight must be >= 0 (got {weight})")
        self.llm, self.weight = llm, weight
        self.mask = speech_only.attention_mask  # (B, S') grows by one column per step
        self.next_position = speech_only.position_ids[:, -1:] + 1  # (B, 1) left padding: the last column is real
        self.batch = speech_only
        self.past = None
        self.steps = 0
        self.cache_arg = cache_arg_name(llm)

    @torch.no_grad()
    def speech_only_logprobs(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """(B, V) log p(next token | speech, tokens so far) from the prompt without picture."""
        if self.past is None:
            out = self.llm(
                inputs_embeds=self.batch.inputs_embeds,
                attention_mask=self.mask,
                position_ids=self.batch.position_ids,
                use_cache=True,
            )
        else:  # one new token: the one generate chose at the previous step
            self.mask = torch.cat([self.mask, self.mask.new_ones(self.mask.shape[0], 1)], dim=1)
            out = self.llm(
                input_ids=input_ids[:, -1:],
                attention_mask=self.mask,
                position_ids=self.next_position,
                use_cache=True,
                **{self.cache_arg: self.past},
            )
            self.next_position = self.next_position + 1
        self.past = output_cache(out)
        return out.logits[:, -1].float().log_softmax(-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        # input_ids (B, step): only the generated tokens (the prompts went in as embeddings)
        if input_ids.shape[0] != self.mask.shape[0]:
            raise ValueError(
                f"picture guidance follows greedy search only: {input_ids.shape[0]} hypotheses for "
                f"{self.mask.shape[0]} utterances (beam search?)"
            )
        if input_ids.shape[1] != self.steps:
            raise ValueError(
                f"picture guidance must see every step in order (step {input_ids.shape[1]}, expected "
                f"{self.steps}): use a new processor per generate call"
            )
        self.steps += 1
        uncond = self.speech_only_logprobs(input_ids)
        cond = scores.float().log_softmax(-1)
        v = min(cond.shape[-1], uncond.shape[-1])  # a padded output vocabulary: compare the shared part
        guided = cond.clone()
        guided[:, :v] += self.weight * (cond[:, :v] - uncond[:, :v])
        return guided.to(scores.dtype)
