"""Draft trees: tree shapes, node bookkeeping and the tree attention mask.

A draft tree hangs below a *root*, the last committed token. Nodes are stored breadth-first, so a
node's parent always comes before it and each depth is one contiguous run of node indices. Node
index -1 stands for the root in `parents`.

Shape letters used in comments: `n` nodes (root excluded), `p` committed prefix length (tokens
before the root), `v` vocabulary size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from mambaviz.errors import MambavizError

MAX_DEPTH = 16
MAX_NODES = 512
ROOT = -1


def count_nodes(shape: tuple[int, ...]) -> int:
    """Return how many nodes a full tree of `shape` has, root excluded."""
    total, level = 0, 1
    for branching in shape:
        level *= branching
        total += level
    return total


def validate_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return `shape` as a tuple of ints, or raise MambavizError naming what is wrong with it."""
    shape = tuple(shape)
    written = ",".join(str(b) for b in shape) or "(empty)"
    if not 1 <= len(shape) <= MAX_DEPTH:
        raise MambavizError(f"Tree shape {written} has depth {len(shape)}; the depth must be 1 to {MAX_DEPTH}.")
    if any(not isinstance(b, int) or isinstance(b, bool) or b < 1 for b in shape):
        raise MambavizError(f"Tree shape {written} is invalid; every branching factor must be an integer of at least 1.")
    nodes = count_nodes(shape)
    if nodes > MAX_NODES:
        raise MambavizError(f"Tree shape {written} has {nodes} nodes; at most {MAX_NODES} are allowed.")
    return shape


def parse_shape(text: str) -> tuple[int, ...]:
    """Parse a shape such as `3,2,2,1,1` or `(3, 2, 2)`; `chain:K` is a chain of K tokens."""
    cleaned = text.strip().strip("()[] ")
    if cleaned.startswith("chain:"):
        depth = cleaned.removeprefix("chain:")
        if not depth.isdigit():
            raise MambavizError(f"Tree shape {text!r} is invalid; write chain:K with K a whole number, e.g. chain:5.")
        return validate_shape((1,) * int(depth))
    parts = [part.strip() for part in cleaned.split(",") if part.strip()]
    if not parts or not all(part.isdigit() for part in parts):
        raise MambavizError(
            f"Tree shape {text!r} is invalid; write branching factors per depth, e.g. 3,2,2,1,1 or chain:5"
            " (the tree field also takes ucb, thompson and dynamic:NODES)."
        )
    return validate_shape(tuple(int(part) for part in parts))


def format_shape(shape: tuple[int, ...]) -> str:
    return ",".join(str(b) for b in shape)


class TreePlan:
    """Decides, one depth at a time, how many children each frontier node of a draft tree gets."""

    max_depth: int = 0

    def branching(self, depth: int, path_probs: torch.Tensor, probs: torch.Tensor, drafted: int) -> list[int]:
        """Return the child count of each frontier node at `depth`.

        `path_probs` [f] is each frontier node's drafter probability of its whole path from the root,
        `probs` [f, v] the drafter's distribution at each frontier node, and `drafted` the number of
        nodes already in the tree.
        """
        raise NotImplementedError

    def grows_after(self, depth: int, drafted: int) -> bool:
        """Return whether the tree may get nodes below `depth` once `drafted` nodes exist."""
        return depth < self.max_depth

    def limited(self, depth: int) -> TreePlan:
        """Return this plan cut to at most `depth` levels."""
        raise NotImplementedError

    @property
    def shape(self) -> tuple[int, ...]:
        """Branching factors per depth when the plan is a fixed shape, else ()."""
        return ()


class ShapePlan(TreePlan):
    """A fixed tree shape: every node at depth d gets shape[d - 1] children."""

    def __init__(self, shape: tuple[int, ...]):
        self._shape = tuple(shape)
        self.max_depth = len(self._shape)

    def branching(self, depth: int, path_probs: torch.Tensor, probs: torch.Tensor, drafted: int) -> list[int]:
        return [self._shape[depth - 1]] * len(path_probs)

    def limited(self, depth: int) -> ShapePlan:
        return ShapePlan(self._shape[: max(depth, 0)])

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape


@dataclass
class DraftTree:
    """The tokens drafted in one step, breadth-first below the root.

    `draft_probs[i]` is the drafter's probability of node i's token given its ancestors (after
    temperature, top-k and top-p). `draft_dists` contains the drafter's full distribution at every
    expanded position, with row `dist_row[parent]` for each expanded parent (ROOT included). It is
    filled under sampling only, because the greedy acceptance rule needs no distributions.
    """

    root_token: int
    shape: tuple[int, ...]
    with_replacement: bool = False  # sampled children were drawn i.i.d. rather than without replacement
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)
    depths: list[int] = field(default_factory=list)
    draft_probs: list[float] = field(default_factory=list)
    path_probs: list[float] = field(default_factory=list)  # drafter probability of the path root → node
    fed: list[bool] = field(default_factory=list)  # whether the drafter consumed the node's token
    draft_dists: torch.Tensor | None = None  # [expanded positions, v]
    dist_row: dict[int, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.tokens)

    def add(self, parent: int, token: int, prob: float) -> int:
        """Append a node below `parent` (ROOT or a node index) and return its index."""
        depth = 1 if parent == ROOT else self.depths[parent] + 1
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(depth)
        self.draft_probs.append(prob)
        self.path_probs.append(prob * (1.0 if parent == ROOT else self.path_probs[parent]))
        self.fed.append(False)
        return len(self.tokens) - 1

    def children(self, parent: int) -> list[int]:
        return [i for i, p in enumerate(self.parents) if p == parent]

    def max_depth(self) -> int:
        return max(self.depths, default=0)

    def path_to(self, node: int) -> list[int]:
        """Return the node indices from depth 1 down to `node`."""
        path = []
        while node != ROOT:
            path.append(node)
            node = self.parents[node]
        return path[::-1]


def ancestor_matrix(parents: list[int]) -> torch.Tensor:
    """Return a bool matrix [n + 1, n + 1] over [root] + nodes: row i is true at i and its ancestors.

    `parents` must be breadth-first (every parent before its children), as DraftTree stores them.
    """
    size = len(parents) + 1
    allowed = torch.zeros(size, size, dtype=torch.bool)
    allowed[:, 0] = True
    parent_rows = torch.tensor(parents, dtype=torch.long) + 1  # [n]
    diagonal = torch.arange(1, size)
    allowed[diagonal, diagonal] = True

    # One vectorized pass per depth suffices because a node's ancestors are its parent's row.
    start = 1
    while start < size:
        end = start
        while end < size and parent_rows[end - 1] < start:
            end += 1
        rows = torch.arange(start, end)
        allowed[rows] |= allowed[parent_rows[rows - 1]]
        start = end
    return allowed


def tree_attention_mask(
    allowed: torch.Tensor, prefix_len: int, dtype: torch.dtype, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Build the additive 4D mask [1, 1, q, p + k] letting each query row see the whole prefix and its
    allowed tree positions, given `allowed` [q, k] over tree positions already in the cache or being fed."""
    queries, keys = allowed.shape
    visible = torch.ones(queries, prefix_len + keys, dtype=torch.bool)
    visible[:, prefix_len:] = allowed
    mask = torch.zeros(queries, prefix_len + keys, dtype=dtype)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)
    return mask.to(device)[None, None]  # [1, 1, q, p + k]
