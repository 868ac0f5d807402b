"""S-Adapter: C-Former outputs -> vectors in the LLM's input-embedding space.

    token vectors (B, N, D) -> MLP (D -> hidden -> H) -> (B, N, H)

With a stage-1 model whose classifier is tied to the LLM's input embeddings (``classifier: tied``)
the adapter can start from what stage 1 already knows: ``mode: expected_embedding`` adds the
expected LLM embedding under the stage-1 unit posterior,

    softmax(stage-1 logits / temperature) @ unit embeddings   (B, N, H)

and the MLP, whose last layer starts at zero, learns the correction. At step 0 the LLM then reads
(a soft version of) the CIF greedy transcript instead of noise.

Adam moves every weight of that last layer by about the learning rate in its first steps, whatever
the gradient's size; summed over a wide hidden layer, the correction can outgrow the LLM's small
embeddings within a few steps and drown what the LLM was reading (seen with Whisper C-Former states:
token accuracy 0.6 at step 0, 0.2 by step 5). ``gate: true`` scales the correction by tanh(g), g a
learned scalar starting at 0 (Flamingo's gated cross-attention): the correction then enters as
the gate opens, not at the first step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SAdapterConfig:
    hidden_dim: int = 1024
    num_layers: int = 2  # linear layers in the MLP (1 = a single projection)
    dropout: float = 0.1
    mode: str = "mlp"  # "mlp" | "expected_embedding" (needs a tied stage-1 classifier)
    temperature: float = 1.0
    gate: bool = False  # expected_embedding: the MLP correction scaled by tanh(g), g learned from 0


class SAdapter(nn.Module):
    def __init__(self, config: SAdapterConfig, in_dim: int, llm_dim: int, unit_embeddings: torch.Tensor | None = None):
        super().__init__()
        if config.mode not in ("mlp", "expected_embedding"):
            raise ValueError(f"unknown adapter mode {config.mode!r} (mlp | expected_embedding)")
        if config.mode == "expected_embedding" and unit_embeddings is None:
            raise ValueError("adapter mode 'expected_embedding' needs a stage-1 model with classifier: tied")
        self.config = config
        dims = [in_dim] + [config.hidden_dim] * (config.num_layers - 1) + [llm_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers += [nn.GELU(), nn.Dropout(config.dropout)]
        self.mlp = nn.Sequential(*layers)
        if config.gate and config.mode != "expected_embedding":
            raise ValueError("adapter gate: true applies to mode expected_embedding (it gates the MLP's correction)")
        if config.gate:
            self.gate = nn.Parameter(torch.zeros(()))  # the last layer keeps its init: the gate's gradient needs it
        if config.mode == "expected_embedding" and not config.gate:
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)
        if config.mode == "expected_embedding":
            self.register_buffer("unit_embeddings", unit_embeddings.detach().clone(), persistent=False)  # (V, H)
            self.log_temperature = nn.Parameter(torch.tensor(float(config.temperature)).log())

    def forward(self, hidden: torch.Tensor, unit_logits: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (B, N, D), unit_logits (B, N, V) from the stage-1 classifier -> (B, N, H)."""
        out = self.mlp(hidden)
        if self.config.gate:
            out = torch.tanh(self.gate) * out
        if self.config.mode == "expected_embedding":
            probs = torch.softmax(unit_logits / self.log_temperature.exp(), dim=-1)
            out = out + probs @ self.unit_embeddings.to(probs.dtype)
        return out
