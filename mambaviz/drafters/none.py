"""The `none` drafter: drafts nothing, so each step is one plain autoregressive target pass.

It is the baseline every speedup is measured against, run through the same engine and timers.
"""

from __future__ import annotations

import torch

from mambaviz.drafters.base import Drafter
from mambaviz.sampling import SamplingConfig
from mambaviz.tree import DraftTree, TreePlan


class NoDrafter(Drafter):
    name = "none"

    def draft(self, plan: TreePlan | tuple[int, ...], sampling: SamplingConfig, generator: torch.Generator | None) -> DraftTree:
        return DraftTree(root_token=self.pending[-1], shape=())

    def commit(self, tree: DraftTree, accepted: list[int], bonus_token: int) -> None:
        self.pending = [bonus_token]

    def prefill(self, prompt_ids: list[int]) -> None:
        self.pending = [prompt_ids[-1]]

    def _consume(self, tokens: list[int]) -> torch.Tensor:
        raise NotImplementedError("the none drafter consumes no tokens")

    def _begin_tree(self) -> None:
        pass

    def _extend(self, tree: DraftTree, nodes: list[int]) -> torch.Tensor:
        raise NotImplementedError("the none drafter drafts no nodes")

    def _keep_path(self, tree: DraftTree, fed_path: list[int]) -> None:
        pass

    def cache_bytes(self) -> int:
        return 0
