"""Target verification of a draft tree in one forward pass, and the acceptance rules.

Shape letters: `n` tree nodes (root excluded), `v` vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mambaviz.kvcache import CachedCausalLM
from mambaviz.metrics import ForwardClock
from mambaviz.sampling import SamplingConfig, probabilities
from mambaviz.tree import ROOT, DraftTree, ancestor_matrix

ACCEPTED, REJECTED, UNVISITED = "accepted", "rejected", "unvisited"


class Target:
    """The target model and its KV cache, which always covers the committed tokens before the root."""

    def __init__(self, model, vocab_size: int, clock: ForwardClock):
        self.lm = CachedCausalLM(model, clock)
        self.vocab_size = vocab_size
        self.root_position = 0  # cache position of the root of the tree being verified

    def prefill(self, prompt_ids: list[int]) -> None:
        self.lm.reset()
        if len(prompt_ids) > 1:
            self.lm.feed(prompt_ids[:-1], list(range(len(prompt_ids) - 1)))

    def verify(self, tree: DraftTree) -> torch.Tensor:
        """Run [root] + nodes through the target at once; return logits [n + 1, v] (row 0 is the root's)."""
        prefix_len = len(self.lm)
        self.root_position = prefix_len
        tokens = [tree.root_token] + tree.tokens
        positions = [prefix_len] + [prefix_len + depth for depth in tree.depths]
        allowed = ancestor_matrix(tree.parents)  # [n + 1, n + 1]
        logits = self.lm.feed(tokens, positions, allowed, tree_start=prefix_len)
        return logits[:, : self.vocab_size]  # [n + 1, v]

    def commit(self, accepted: list[int]) -> None:
        """Keep the prefix, the root and the accepted nodes; the bonus token is the next root."""
        root_position = self.root_position
        self.lm.keep(root_position + 1, [root_position + 1 + node for node in accepted])

    def cache_bytes(self) -> int:
        return self.lm.nbytes()


@dataclass
class Acceptance:
    """The outcome of verifying one tree.

    `accepted` lists node indices from depth 1 down. `target_probs[i]` is the target's probability
    of node i's token at its parent. `accept_probs[i]` is the probability with which node i was
    accepted when it was tried, or None when it never was.
    """

    accepted: list[int]
    bonus_token: int
    status: list[str]
    target_probs: list[float]
    accept_probs: list[float | None]


def node_target_probs(tree: DraftTree, target_probs: torch.Tensor) -> list[float]:
    """Return each node's token probability under the target at its parent, from probs [n + 1, v]."""
    if not tree.tokens:
        return []
    parent_rows = torch.tensor(tree.parents) + 1
    return target_probs[parent_rows, torch.tensor(tree.tokens)].tolist()


def _children_by_parent(tree: DraftTree) -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for node, parent in enumerate(tree.parents):
        children.setdefault(parent, []).append(node)
    return children


def accept_greedy(tree: DraftTree, target_logits: torch.Tensor) -> Acceptance:
    """Greedy acceptance: descend from the root, at each node taking the child equal to the target's argmax.

    The bonus token is the target's argmax at the last accepted node, so the committed tokens are
    exactly what the target's own greedy decoding would produce.
    """
    argmax = target_logits.argmax(dim=-1).tolist()  # [n + 1]
    probs = torch.softmax(target_logits.float(), dim=-1)
    children = _children_by_parent(tree)
    status = [UNVISITED] * len(tree)
    accept_probs: list[float | None] = [None] * len(tree)

    accepted, node = [], ROOT
    while True:
        target_token = argmax[node + 1]
        match = None
        for child in children.get(node, []):
            hit = tree.tokens[child] == target_token
            status[child] = ACCEPTED if hit else REJECTED
            accept_probs[child] = 1.0 if hit else 0.0
            if hit and match is None:
                match = child
        if match is None:
            break
        accepted.append(match)
        node = match

    return Acceptance(accepted, argmax[node + 1], status, node_target_probs(tree, probs), accept_probs)


def accept_sampling(
    tree: DraftTree, target_probs: torch.Tensor, generator: torch.Generator | None
) -> Acceptance:
    """Recursive rejection sampling over each node's children, which keeps the target distribution exactly.

    At a node with target distribution r = p and drafter distribution q', try the children in draft
    order. Child c is accepted with probability min(1, r(c) / q'(c)). On rejection the target's
    leftover mass becomes r ← normalize(max(r − q', 0)), and when children were drawn without
    replacement, also q'(c) ← 0 and q' is renormalized (i.i.d. children keep q' as it is). When no child is accepted, the bonus token is
    sampled from r; below an accepted leaf it is sampled from the target at that leaf. On a chain
    this is the speculative sampling rule of Leviathan et al. (2023) and Chen et al. (2023); for i.i.d.
    children it is SpecInfer's multi-step rule (Miao et al., 2024), and for children drawn without
    replacement the recursive rule of Jeon et al. (2024).
    """
    target_probs = target_probs.double().cpu()  # [n + 1, v]
    draft_dists = tree.draft_dists.double() if tree.draft_dists is not None else None
    children = _children_by_parent(tree)
    status = [UNVISITED] * len(tree)
    accept_probs: list[float | None] = [None] * len(tree)

    accepted, node = [], ROOT
    residual = target_probs[0].clone()
    while True:
        kids = children.get(node, [])
        if not kids:
            break
        draft = draft_dists[tree.dist_row[node]].clone()  # [v]
        match = None
        for child in kids:
            token = tree.tokens[child]
            ratio = 1.0 if draft[token] <= 0 else min(1.0, (residual[token] / draft[token]).item())
            accept_probs[child] = ratio
            if torch.rand((), dtype=torch.float64, generator=generator).item() < ratio:
                status[child] = ACCEPTED
                match = child
                break
            status[child] = REJECTED
            residual = _normalized(torch.clamp(residual - draft, min=0), fallback=residual)
            if not tree.with_replacement:
                draft[token] = 0
                draft = _normalized(draft, fallback=draft)
        if match is None:
            break
        accepted.append(match)
        node = match
        residual = target_probs[node + 1].clone()

    bonus = int(torch.multinomial(residual.float(), 1, generator=generator).item())
    return Acceptance(accepted, bonus, status, node_target_probs(tree, target_probs), accept_probs)


def _normalized(weights: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    total = weights.sum()
    if total <= 0:
        # Only rounding can empty the leftover mass (r and q' equal), and then the fallback is r itself.
        return fallback
    return weights / total


def accept(
    tree: DraftTree, target_logits: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator | None
) -> Acceptance:
    """Apply the greedy or the sampling rule, by the sampling config."""
    if sampling.greedy:
        return accept_greedy(tree, target_logits)
    return accept_sampling(tree, probabilities(target_logits, sampling), generator)
