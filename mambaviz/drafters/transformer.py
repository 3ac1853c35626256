"""Transformer drafter: any Hugging Face causal LM, drafting a tree on top of its KV cache.

Each depth of the tree is one forward pass with a tree attention mask. Its cache therefore grows with
the context and, within a step, with the tree. After verification it is cut back to the accepted path.
"""

from __future__ import annotations

import torch

from mambaviz.drafters.base import Drafter
from mambaviz.kvcache import CachedCausalLM
from mambaviz.metrics import ForwardClock
from mambaviz.tree import DraftTree, ancestor_matrix


class TransformerDrafter(Drafter):
    """Drafts trees with a KV-cached causal LM."""

    name = "transformer"

    def __init__(self, model, vocab_size: int, clock: ForwardClock | None = None):
        lm_device = next(model.parameters()).device
        super().__init__(vocab_size, lm_device, clock)
        self.lm = CachedCausalLM(model, self.clock)
        self.root_position = 0  # cache position of the current tree's root

    def reset(self) -> None:
        super().reset()
        self.lm.reset()

    def _consume(self, tokens: list[int]) -> torch.Tensor:
        start = len(self.lm)
        logits = self.lm.feed(tokens, list(range(start, start + len(tokens))))  # [q, v']
        return logits[-1:]

    def _begin_tree(self) -> None:
        self.root_position = len(self.lm) - 1

    def _extend(self, tree: DraftTree, nodes: list[int]) -> torch.Tensor:
        # Fed depths are contiguous runs in breadth-first order, so node i sits at root_position + 1 + i.
        end = nodes[-1] + 1
        allowed = ancestor_matrix(tree.parents[:end])[[node + 1 for node in nodes]]  # [q, end + 1]
        positions = [self.root_position + tree.depths[node] for node in nodes]
        tokens = [tree.tokens[node] for node in nodes]
        return self.lm.feed(tokens, positions, allowed, tree_start=self.root_position)  # [q, v']

    def _keep_path(self, tree: DraftTree, fed_path: list[int]) -> None:
        self.lm.keep(self.root_position + 1, [self.root_position + 1 + node for node in fed_path])

    def cache_bytes(self) -> int:
        return self.lm.nbytes()
