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
from mambaviz.tree import ROOT, DraftTree


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
        """Bytes the drafter cache holds between steps."""

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

    def draft(self, shape: tuple[int, ...], sampling: SamplingConfig, generator: torch.Generator | None) -> DraftTree:
        """Draft a tree of `shape` below the root (the last pending token).

        Greedy: each node's children are the drafter's top-k tokens. Sampling: k children are
        sampled without replacement from the processed drafter distribution, and a node with fewer than
        k tokens of nonzero probability (after top-k / top-p) gets fewer children. With
        `with_replacement` they are k i.i.d. draws instead.
        """
        tree = DraftTree(root_token=self.pending[-1], shape=tuple(shape), with_replacement=self.with_replacement)
        logits = self._consume(self.pending)  # [1, v']
        self.consumed += len(self.pending)
        self.pending = []
        self._begin_tree()

        frontier = [ROOT]
        dists = []
        for depth, branching in enumerate(shape, start=1):
            probs = probabilities(logits[:, : self.vocab_size], sampling)  # [frontier, v]
            if not sampling.greedy:
                for parent in frontier:
                    tree.dist_row[parent] = len(tree.dist_row)
                dists.append(probs)
            children = self._choose_children(probs, branching, sampling, generator)
            new_nodes = []
            for row, parent in enumerate(frontier):
                for token, prob in children[row]:
                    new_nodes.append(tree.add(parent, token, prob))
            if depth == len(shape) or not new_nodes:
                break
            logits = self._extend(tree, new_nodes)
            frontier = new_nodes

        if dists:
            tree.draft_dists = torch.cat(dists).cpu()  # [expanded positions, v]
        return tree

    def commit(self, tree: DraftTree, accepted: list[int], bonus_token: int) -> None:
        """Keep only the accepted path; the bonus token and any unfed accepted leaf become pending."""
        fed = [node for node in accepted if self._was_fed(tree, node)]
        unfed = [tree.tokens[node] for node in accepted if not self._was_fed(tree, node)]
        self._keep_path(tree, fed)
        self.consumed += len(fed)
        self.pending = unfed + [bonus_token]

    def _was_fed(self, tree: DraftTree, node: int) -> bool:
        """Whether the node's token went through the drafter (every depth but the tree's last)."""
        return tree.depths[node] < len(tree.shape)

    def _choose_children(
        self, probs: torch.Tensor, branching: int, sampling: SamplingConfig, generator: torch.Generator | None
    ) -> list[list[tuple[int, float]]]:
        """Return, per frontier row of `probs` [f, v], the (token, drafter prob) pairs of its children."""
        if sampling.greedy:
            top = torch.topk(probs, min(branching, probs.shape[-1]), dim=-1)
            tokens, picked = top.indices.tolist(), top.values.tolist()
            return [list(zip(row_tokens, row_probs)) for row_tokens, row_probs in zip(tokens, picked)]

        support = (probs > 0).sum(dim=-1).tolist()
        if self.with_replacement:
            sampled = torch.multinomial(probs, branching, replacement=True, generator=generator)  # [f, k]
        elif min(support) >= branching:
            sampled = torch.multinomial(probs, branching, replacement=False, generator=generator)  # [f, k]
        else:
            sampled = [
                torch.multinomial(row, min(branching, count), replacement=False, generator=generator)
                for row, count in zip(probs, support)
            ]
        children = []
        for row, row_tokens in enumerate(sampled):
            row_tokens = row_tokens.tolist()
            children.append(list(zip(row_tokens, probs[row, row_tokens].tolist())))
        return children
