"""The drafter interface and the tree-drafting loop every drafter shares.

A drafter keeps a *drafter cache* between steps and a short list of *pending* tokens: committed
tokens it has not consumed yet. After a step the pending list is the bonus token, preceded by the
deepest accepted node when that node was a leaf the drafter never fed through itself. The last
pending token is the next draft tree's root.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from mambaviz.metrics import ForwardClock
from mambaviz.sampling import SamplingConfig, probabilities
from mambaviz.tree import ROOT, DraftTree, ShapePlan, TreePlan


class Drafter(ABC):
    """Proposes a draft tree each step and keeps its cache in step with the committed tokens."""

    name: str = "drafter"
    # Sampled children are drawn without replacement unless this is set (i.i.d. drafts, SpecInfer style).
    with_replacement: bool = False

    def __init__(self, vocab_size: int, device: torch.device, clock: ForwardClock | None = None):
        self.vocab_size = vocab_size
        self.device = device
        self.clock = clock or ForwardClock(device)
        self.pending: list[int] = []
        self.consumed = 0  # committed tokens the drafter cache covers

    # Hooks each drafter implements.

    @abstractmethod
    def _consume(self, tokens: list[int]) -> torch.Tensor:
        """Feed committed tokens on top of the cache; return the logits [1, v'] after the last one."""

    @abstractmethod
    def _begin_tree(self) -> None:
        """Start per-tree bookkeeping; the cache has just consumed the root."""

    @abstractmethod
    def _extend(self, tree: DraftTree, nodes: list[int]) -> torch.Tensor:
        """Feed one whole depth of nodes; return their logits [len(nodes), v']."""

    @abstractmethod
    def _keep_path(self, tree: DraftTree, fed_path: list[int]) -> None:
        """Cut the cache back to the committed prefix, the root and the fed accepted nodes."""

    @abstractmethod
    def cache_bytes(self) -> int:
        """Return the bytes the drafter cache keeps between steps."""

    # The shared algorithm.

    def prefill(self, prompt_ids: list[int]) -> None:
        """Consume the prompt except its last token, which becomes the first root."""
        self.reset()
        if len(prompt_ids) > 1:
            self._consume(prompt_ids[:-1])
            self.consumed = len(prompt_ids) - 1
        self.pending = [prompt_ids[-1]]

    def reset(self) -> None:
        self.pending = []
        self.consumed = 0

    def draft(
        self, plan: TreePlan | tuple[int, ...], sampling: SamplingConfig, generator: torch.Generator | None
    ) -> DraftTree:
        """Draft a tree below the root (the last pending token), one depth per drafter forward pass.

        `plan` (or a plain shape) sets how many children each node gets. Greedy: a node's children
        are the drafter's most likely tokens. Sampling: they are sampled without replacement from the
        processed drafter distribution, and a node with fewer tokens of nonzero probability (after
        top-k / top-p) than asked gets fewer children. With `with_replacement` they are i.i.d. draws.
        """
        plan = plan if isinstance(plan, TreePlan) else ShapePlan(tuple(plan))
        tree = DraftTree(root_token=self.pending[-1], shape=plan.shape, with_replacement=self.with_replacement)
        logits = self._consume(self.pending)  # [1, v']
        self.consumed += len(self.pending)
        self.pending = []
        self._begin_tree()

        frontier = [ROOT]
        path_probs = torch.ones(1)  # [frontier]
        dists = []
        for depth in range(1, plan.max_depth + 1):
            probs = probabilities(logits[:, : self.vocab_size], sampling)  # [frontier, v]
            if not sampling.greedy:
                for parent in frontier:
                    tree.dist_row[parent] = len(tree.dist_row)
                dists.append(probs)
            counts = plan.branching(depth, path_probs, probs, len(tree))
            children = self._choose_children(probs, counts, sampling, generator)
            new_nodes = []
            for row, parent in enumerate(frontier):
                for token, prob in children[row]:
                    new_nodes.append(tree.add(parent, token, prob))
            if not new_nodes or not plan.grows_after(depth, len(tree)):
                break
            logits = self._extend(tree, new_nodes)
            for node in new_nodes:
                tree.fed[node] = True
            frontier = new_nodes
            path_probs = torch.tensor([tree.path_probs[node] for node in new_nodes])

        if dists:
            tree.draft_dists = torch.cat(dists).cpu()  # [expanded positions, v]
        return tree

    def commit(self, tree: DraftTree, accepted: list[int], bonus_token: int) -> None:
        """Keep only the accepted path; the bonus token and any unfed accepted leaf become pending."""
        fed = [node for node in accepted if tree.fed[node]]
        unfed = [tree.tokens[node] for node in accepted if not tree.fed[node]]
        self._keep_path(tree, fed)
        self.consumed += len(fed)
        self.pending = unfed + [bonus_token]

    def _choose_children(
        self, probs: torch.Tensor, counts: list[int], sampling: SamplingConfig, generator: torch.Generator | None
    ) -> list[list[tuple[int, float]]]:
        """Return, per frontier row of `probs` [f, v], the (token, drafter prob) pairs of its `counts[row]` children."""
        widest = min(max(counts, default=0), probs.shape[-1])
        if widest == 0:
            return [[] for _ in counts]
        if sampling.greedy:
            top = torch.topk(probs, widest, dim=-1)
            tokens, picked = top.indices.tolist(), top.values.tolist()
            return [list(zip(tokens[row][:count], picked[row][:count])) for row, count in enumerate(counts)]

        support = (probs > 0).sum(dim=-1).tolist()
        if self.with_replacement:
            sampled = [torch.multinomial(row, count, replacement=True, generator=generator) if count else []
                       for row, count in zip(probs, counts)]
        elif len(set(counts)) == 1 and min(support) >= widest:
            sampled = torch.multinomial(probs, widest, replacement=False, generator=generator)  # [f, k]
        else:
            sampled = [
                torch.multinomial(row, min(count, available), replacement=False, generator=generator) if count else []
                for row, count, available in zip(probs, counts, support)
            ]
        children = []
        for row, row_tokens in enumerate(sampled):
            row_tokens = row_tokens.tolist() if isinstance(row_tokens, torch.Tensor) else row_tokens
            children.append(list(zip(row_tokens, probs[row, row_tokens].tolist())))
        return children
