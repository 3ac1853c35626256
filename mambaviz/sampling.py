"""Sampling settings and the logits → probabilities transform shared by drafter and target.

Losslessness needs both models' distributions processed the same way, so this module is the only
place temperature, top-k and top-p are applied.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mambaviz.errors import MambavizError


@dataclass(frozen=True)
class SamplingConfig:
    """Temperature 0 means greedy decoding; top_k 0 and top_p 1.0 switch those filters off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.temperature) or self.temperature < 0:
            raise MambavizError(f"Temperature {self.temperature} is invalid; use 0 for greedy or a positive number.")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise MambavizError(f"Top-k {self.top_k} is invalid; use 0 to switch it off or a positive integer.")
        if not math.isfinite(self.top_p) or not 0 < self.top_p <= 1:
            raise MambavizError(f"Top-p {self.top_p} is invalid; it must be greater than 0 and at most 1.")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def probabilities(logits: torch.Tensor, config: SamplingConfig) -> torch.Tensor:
    """Turn logits [..., v] into probabilities [..., v] after temperature, top-k and top-p.

    Top-p keeps the smallest set of most likely tokens whose mass reaches `top_p` (the token that
    crosses the threshold is kept). Greedy configs return the softmax at temperature 1, which is
    what the trace shows as drafter and target probabilities.
    """
    logits = logits.float()
    if config.greedy:
        return torch.softmax(logits, dim=-1)
    logits = logits / config.temperature

    if config.top_k and config.top_k < logits.shape[-1]:
        kth_largest = torch.topk(logits, config.top_k, dim=-1).values[..., -1:]  # [..., 1]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))

    probs = torch.softmax(logits, dim=-1)
    if config.top_p < 1.0:
        # NOTE: top-p sorts the whole vocabulary per row, so very wide trees cost O(nodes × v log v).
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True)
        mass_before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
        sorted_probs = sorted_probs.masked_fill(mass_before >= config.top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs
