"""What every model built around a frozen LLM shares (the speech LLM of stage 2, the image-caption
model of the image stage): only the trained tensors are saved and loaded, and the prompt prefix,
the same for every example, goes through the LLM once, its keys/values reused for every batch.

A host class sets ``self.llm`` (the causal LM), ``self.prompt`` (``prefix`` token ids),
``self.device``, calls :meth:`FrozenLlmMixin.init_frozen_llm` and may override
:meth:`prefix_cache_allowed` (e.g. off when LoRA makes the prefix's keys/values change).
"""

from __future__ import annotations

import copy
import inspect

import torch


class FrozenLlmMixin:
    def init_frozen_llm(self) -> None:
        self.cache_prefix = True  # reuse the prompt prefix's keys/values in training
        self._prefix_kv = None
        self._cache_arg = cache_arg_name(self.llm)

    # ---- what is trained is what is saved ------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        missing = {n for n, p in self.named_parameters() if p.requires_grad} - set(state)
        if missing:
            raise ValueError(f"checkpoint lacks trainable tensors: {sorted(missing)[:5]}...")
        self.load_state_dict(state, strict=False)

    # ---- the prompt prefix's keys/values -------------------------------------------------------
    def prefix_cache_allowed(self) -> bool:
        return self.cache_prefix

    def prefix_cache(self, batch_size: int):
        """Keys/values of the prompt prefix, repeated for the batch; None where not allowed."""
        if not self.prefix_cache_allowed():
            return None
        if self._prefix_kv is None:
            with torch.no_grad():
                ids = torch.tensor([self.prompt.prefix], device=self.device)
                self._prefix_kv = output_cache(self.llm(input_ids=ids, use_cache=True))
        cache = copy.deepcopy(self._prefix_kv)
        cache.batch_repeat_interleave(batch_size)
        return cache

    def cache_kwargs(self, cache) -> dict:
        """The LLM forward's keyword for ``cache`` (none when there is no cache)."""
        return {self._cache_arg: cache} if cache is not None else {}


def output_cache(out):
    """The keys/values cache of an LLM forward's output, under either transformers name (``cache`` from
    5.2x, where reading ``past_key_values`` still works but warns; ``past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def cache_arg_name(llm) -> str:
    """The keyword of ``llm``'s forward for the keys/values cache: transformers renamed
    ``past_key_values`` to ``cache`` (5.2x); a peft wrapper's forward takes ``**kwargs``, so ask its base model."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
