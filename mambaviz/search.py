"""Tree-shape policies: which draft tree to grow at each step.

A policy returns a TreePlan before each step and receives the step's outcome afterwards, so adaptive
policies learn from committed tokens and step time while decoding:

- `FixedShape`: the same shape every step.
- `ShapeBandit`: a multi-armed bandit whose arms are tree shapes, chosen by UCB1 or by Thompson
  sampling. The reward is committed tokens per second of step time, or committed tokens per step
  (machine-independent).
- `DynamicTree`: a confidence-driven tree that expands the nodes with the highest drafter path
  probability until a node budget and a depth limit are reached.
"""

from __future__ import annotations

import math
import random
from typing import Any

import torch

from mambaviz.errors import MambavizError
from mambaviz.tree import MAX_DEPTH, MAX_NODES, ShapePlan, TreePlan, format_shape, parse_shape, validate_shape

# Chains of 3 to 5, two narrow trees, and three wider trees that suit a large target on a GPU,
# where a wide tree costs about as much to verify as a chain.
DEFAULT_ARMS = (
    (1, 1, 1),
    (1, 1, 1, 1),
    (1, 1, 1, 1, 1),
    (2, 1, 1, 1),
    (2, 2, 1, 1),
    (3, 2, 2, 1, 1),
    (3, 3, 2, 1),
    (2, 2, 2, 1, 1, 1),
)
REWARDS = ("tokens_per_second", "tokens_per_step")
UCB_EXPLORATION = 0.2
BANDITS = ("ucb", "thompson")


class ShapePolicy:
    """Chooses each step's tree plan and learns from the step's outcome."""

    name = "policy"

    def next_plan(self) -> TreePlan:
        raise NotImplementedError

    def observe(self, plan: TreePlan, committed: int, seconds: float) -> None:
        """Record that a step drafted with `plan` committed `committed` tokens in `seconds`."""

    def decision(self) -> dict[str, Any] | None:
        """Describe the latest choice for the trace, or None when there is nothing to explain."""
        return None

    def describe(self) -> str:
        return self.name


class FixedShape(ShapePolicy):
    name = "fixed"

    def __init__(self, shape: tuple[int, ...]):
        self.plan = ShapePlan(validate_shape(shape))

    def next_plan(self) -> TreePlan:
        return self.plan

    def describe(self) -> str:
        return format_shape(self.plan.shape)


class ShapeBandit(ShapePolicy):
    """A bandit over tree shapes: each shape is an arm, each step one pull.

    UCB1 (Auer et al., 2002) plays every arm once, then the arm maximizing
    mean / scale + c * sqrt(2 ln N / n). N counts all pulls and n the arm's pulls. Scale is the
    largest mean reward so far, because UCB1 assumes rewards in [0, 1] and tokens/s has no fixed
    bound. The textbook c is 1, but good arms differ by 5 to 30% in mean reward while one step's
    reward swings by about 40% with its accepted length, so with c = 1 the bonus outweighs the
    differences for a whole run and the bandit keeps exploring. The default c = 0.2 was chosen with
    `python -m benchmarks.bandit_replay` on the bundled models (20 held-out prompts, greedy and
    temperature 1, a 2-core x86-64 CPU).
    Thompson sampling draws each arm's mean from a normal posterior N(mean, s² / n), with s the
    pooled standard deviation of all rewards, and plays the largest draw; unplayed arms go first.
    """

    def __init__(
        self,
        arms: tuple[tuple[int, ...], ...] = DEFAULT_ARMS,
        algorithm: str = "ucb",
        reward: str = "tokens_per_second",
        seed: int = 0,
        exploration: float = UCB_EXPLORATION,
    ):
        if algorithm not in BANDITS:
            raise MambavizError(f"Unknown bandit algorithm {algorithm!r}; choose ucb or thompson.")
        if reward not in REWARDS:
            raise MambavizError(f"Unknown bandit reward {reward!r}; choose one of {', '.join(REWARDS)}.")
        if not arms:
            raise MambavizError("The bandit needs at least one arm (tree shape).")
        self.arms = [validate_shape(arm) for arm in arms]
        self.plans = [ShapePlan(arm) for arm in self.arms]
        self.algorithm = algorithm
        self.reward = reward
        self.name = algorithm
        self.pulls = [0] * len(self.arms)
        self.reward_sums = [0.0] * len(self.arms)
        self.reward_squares = [0.0] * len(self.arms)
        self.random = random.Random(seed)
        self.exploration = exploration
        self.chosen = 0
        self.scores: list[float | None] = [None] * len(self.arms)

    def next_plan(self) -> TreePlan:
        self.scores = self._scores()
        unplayed = [arm for arm, pulls in enumerate(self.pulls) if pulls == 0]
        if unplayed:
            self.chosen = unplayed[0]
        else:
            self.chosen = max(range(len(self.arms)), key=lambda arm: self.scores[arm])
        return self.plans[self.chosen]

    def observe(self, plan: TreePlan, committed: int, seconds: float) -> None:
        # The engine may cut the plan near the token limit, but the pull still belongs to the chosen arm.
        value = committed / seconds if self.reward == "tokens_per_second" else float(committed)
        self.pulls[self.chosen] += 1
        self.reward_sums[self.chosen] += value
        self.reward_squares[self.chosen] += value * value

    def means(self) -> list[float | None]:
        return [total / pulls if pulls else None for total, pulls in zip(self.reward_sums, self.pulls)]

    def _scores(self) -> list[float | None]:
        means = self.means()
        total = sum(self.pulls)
        if self.algorithm == "ucb":
            scale = max((mean for mean in means if mean is not None), default=0.0) or 1.0
            return [None if mean is None else mean / scale + self.exploration * math.sqrt(2 * math.log(total) / pulls)
                    for mean, pulls in zip(means, self.pulls)]

        spread = self._pooled_std(means)
        return [None if mean is None else self.random.gauss(mean, spread / math.sqrt(pulls))
                for mean, pulls in zip(means, self.pulls)]

    def _pooled_std(self, means: list[float | None]) -> float:
        total = sum(self.pulls)
        if total < 2:
            return max((abs(mean) for mean in means if mean is not None), default=1.0) or 1.0
        squares = sum(self.reward_squares)
        mean = sum(self.reward_sums) / total
        variance = max(squares / total - mean * mean, 0.0)
        return math.sqrt(variance) or 1e-9

    def decision(self) -> dict[str, Any]:
        return {
            "kind": "bandit",
            "algorithm": self.algorithm,
            "reward": self.reward,
            "exploration": self.exploration,
            "arms": [format_shape(arm) for arm in self.arms],
            "chosen": self.chosen,
            "pulls": list(self.pulls),
            "mean_rewards": self.means(),
            "scores": list(self.scores),
            "reward_sums": list(self.reward_sums),
            "reward_squares": list(self.reward_squares),
        }

    def load_statistics(self, decision: dict[str, Any]) -> None:
        """Start from the arm statistics of a previous run (a bandit step's `policy` record)."""
        if decision.get("kind") != "bandit" or decision.get("arms") != [format_shape(a) for a in self.arms]:
            raise MambavizError("The saved bandit statistics are for other arms; use the same arms as that run.")
        self.pulls = [int(pulls) for pulls in decision["pulls"]]
        self.reward_sums = [float(value) for value in decision["reward_sums"]]
        self.reward_squares = [float(value) for value in decision["reward_squares"]]

    def describe(self) -> str:
        return f"{self.algorithm}[{';'.join(format_shape(arm) for arm in self.arms)}]"


def last_bandit_decision(steps) -> dict[str, Any] | None:
    """Return the bandit statistics recorded by the last bandit step among `steps`, or None."""
    decisions = [step.policy for step in steps if step.policy and step.policy.get("kind") == "bandit"]
    return decisions[-1] if decisions else None


class ConfidencePlan(TreePlan):
    """A tree grown by drafter confidence, until `node_budget` nodes or `max_depth` levels exist.

    At each depth the candidate children with the highest path probability are kept. A candidate's
    path probability is its parent's times its own drafter probability, and each node offers its
    most likely tokens in order.

    Under sampling, the child counts come from the same scores, computed before any child is drawn;
    the children themselves are then sampled without replacement, so acceptance stays lossless.
    """

    def __init__(self, node_budget: int, max_depth: int, max_children: int):
        self.node_budget = node_budget
        self.max_depth = max_depth
        self.max_children = max_children
        self.expansion_order: list[tuple[int, int]] = []  # (depth, frontier row) per selected child

    def branching(self, depth: int, path_probs: torch.Tensor, probs: torch.Tensor, drafted: int) -> list[int]:
        if depth == 1:
            self.expansion_order = []
        left = self.node_budget - drafted
        width = min(self.max_children, probs.shape[-1])
        top = torch.topk(probs, width, dim=-1).values  # [f, width]
        scores = (path_probs.unsqueeze(-1).to(top.dtype) * top).flatten()  # [f * width]
        keep = min(left, int((scores > 0).sum()))
        chosen = torch.topk(scores, keep).indices.tolist() if keep > 0 else []
        counts = [0] * len(path_probs)
        for index in chosen:
            counts[index // width] += 1
            self.expansion_order.append((depth, index // width))
        return counts

    def grows_after(self, depth: int, drafted: int) -> bool:
        return depth < self.max_depth and drafted < self.node_budget

    def limited(self, depth: int) -> ConfidencePlan:
        return ConfidencePlan(self.node_budget, min(self.max_depth, max(depth, 0)), self.max_children)


class DynamicTree(ShapePolicy):
    """The confidence-driven dynamic tree as a policy: the same budget every step, shaped by the drafter."""

    name = "dynamic"

    def __init__(self, node_budget: int, max_depth: int = 8, max_children: int = 4):
        if not 1 <= node_budget <= MAX_NODES:
            raise MambavizError(f"Dynamic tree budget {node_budget} is invalid; use 1 to {MAX_NODES} nodes.")
        if not 1 <= max_depth <= MAX_DEPTH:
            raise MambavizError(f"Dynamic tree depth {max_depth} is invalid; use 1 to {MAX_DEPTH}.")
        self.plan = ConfidencePlan(node_budget, max_depth, max_children)
        self.last_plan = self.plan

    def next_plan(self) -> TreePlan:
        return self.plan

    def observe(self, plan: TreePlan, committed: int, seconds: float) -> None:
        self.last_plan = plan

    def decision(self) -> dict[str, Any]:
        return {
            "kind": "dynamic",
            "node_budget": self.plan.node_budget,
            "max_depth": self.plan.max_depth,
            "max_children": self.plan.max_children,
            "expansion_order": [list(entry) for entry in self.last_plan.expansion_order],
        }

    def describe(self) -> str:
        return f"dynamic:{self.plan.node_budget}"


def parse_arms(text: str) -> tuple[tuple[int, ...], ...]:
    """Parse an arm pool such as `1,1,1,1;3,2,2,1,1`."""
    parts = [part for part in text.split(";") if part.strip()]
    if not parts:
        raise MambavizError(f"Arm pool {text!r} is invalid; separate tree shapes with ';', e.g. 1,1,1,1;3,2,2,1,1.")
    return tuple(parse_shape(part) for part in parts)


def build_policy(tree: str, arms: str | None = None, reward: str = "tokens_per_second", seed: int = 0) -> ShapePolicy:
    """Build the policy that a `--tree` value names: a shape, `ucb`, `thompson` or `dynamic:NODES`."""
    text = tree.strip()
    if text in BANDITS:
        pool = parse_arms(arms) if arms else DEFAULT_ARMS
        return ShapeBandit(pool, algorithm=text, reward=reward, seed=seed)
    if text.startswith("dynamic"):
        _, _, budget = text.partition(":")
        if not budget.strip().isdigit():
            raise MambavizError(f"Tree {tree!r} is invalid; write dynamic:NODES with a node budget, e.g. dynamic:32.")
        return DynamicTree(int(budget))
    return FixedShape(parse_shape(text))
