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
import statistics
from typing import Any

import torch

from mambaviz.errors import MambavizError
from mambaviz.tree import MAX_DEPTH, MAX_NODES, ShapePlan, TreePlan, format_shape, parse_shape, validate_shape

# Chains of 3 to 5, two narrow trees, and the three wider trees from the method's experiments with
# a large target on a GPU, where verifying a wide tree costs little more than verifying a chain.
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
UCB_EXPLORATION = 0.5
RECENT_STEPS = 16  # step times kept per arm for its median
BANDITS = ("ucb", "thompson")


class ShapePolicy:
    """Chooses each step's tree plan and learns from the step's outcome."""

    name = "policy"
    uses_accepted_ranks = False  # whether `observe` needs the accepted nodes' sibling ranks

    def next_plan(self) -> TreePlan:
        raise NotImplementedError

    def observe(self, plan: TreePlan, committed: int, seconds: float, accepted_ranks: list[int] | None = None) -> None:
        """Record that a step drafted with `plan` committed `committed` tokens in `seconds`.

        `accepted_ranks`, given for steps the engine did not cut, lists the sibling rank (0 for the
        first child drafted) of each accepted node from depth 1 down.
        """

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

    An arm's mean reward is its throughput: its mean committed tokens per step ÷ the median step
    time of its last RECENT_STEPS pulls (or committed tokens per step with the tokens_per_step
    reward). The median, rather than the mean, keeps one step slowed by another process on a shared
    machine from condemning an arm.

    One step also shows what every smaller arm would have committed. An arm whose shape fits inside
    the drafted shape would have drafted the top-ranked part of the tree: under greedy decoding a
    node's children are the drafter's top-k tokens, and under sampling they are drawn in order
    without replacement, so the first k children are themselves a draw of k. Acceptance tries the
    children in that order, so with the same random draws the smaller tree accepts the same path
    while each accepted node's sibling rank stays below the arm's branching factor, and stops with
    the bonus token where it does not. The count is therefore an exact sample of the arm's committed
    tokens. Those counts join the arm's token observations, while its step time comes from its own
    pulls only. Good shapes differ by 5 to 30% while one step's committed tokens vary by about half
    their mean (estimated on the bundled models), so the shared observations matter.

    UCB1 (Auer et al., 2002) plays every arm once, then the arm maximizing
    (mean + c * s * sqrt(2 ln N / n)) / scale. N counts all steps, n the arm's own pulls, s is the
    pooled within-arm standard deviation of committed tokens per step converted to the
    arm's reward unit, and scale is the largest mean, so scores are comparable whatever the unit.
    The default c = 0.5 explores less than the textbook 1, and `python -m benchmarks.bandit_replay`
    compares constants on recorded steps. Thompson sampling draws each arm's mean from a normal
    posterior N(mean, s² / n) and plays the largest draw; unplayed arms go first.
    """

    uses_accepted_ranks = True

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
        self.observations = [0] * len(self.arms)  # steps whose committed tokens are known: pulls and shared
        self.token_sums = [0.0] * len(self.arms)
        self.token_squares = [0.0] * len(self.arms)
        self.recent_seconds: list[list[float]] = [[] for _ in self.arms]
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
            # Ties, as when every reward so far is equal, go to the arm with fewer pulls.
            self.chosen = max(range(len(self.arms)), key=lambda arm: (self.scores[arm], -self.pulls[arm]))
        return self.plans[self.chosen]

    def observe(self, plan: TreePlan, committed: int, seconds: float, accepted_ranks: list[int] | None = None) -> None:
        # The engine may cut the plan near the token limit, but the pull still belongs to the chosen arm.
        arm = self.chosen
        self.pulls[arm] += 1
        recent = self.recent_seconds[arm]
        recent.append(seconds)
        del recent[:-RECENT_STEPS]
        self._add_tokens(arm, committed)
        if accepted_ranks is None:
            return
        drafted = plan.shape
        for other, shape in enumerate(self.arms):
            if other != arm and fits_inside(shape, drafted):
                self._add_tokens(other, committed_within(shape, accepted_ranks))

    def _add_tokens(self, arm: int, committed: int) -> None:
        self.observations[arm] += 1
        self.token_sums[arm] += committed
        self.token_squares[arm] += committed * committed

    def _typical_seconds(self) -> list[float | None]:
        """Return each arm's median step time over its recent pulls, or None before its first pull."""
        return [statistics.median(recent) if recent else None for recent in self.recent_seconds]

    def means(self, typical_seconds: list[float | None] | None = None) -> list[float | None]:
        """Return each arm's mean reward, or None before the arm's first pull."""
        if typical_seconds is None:
            typical_seconds = self._typical_seconds()
        means = []
        for arm, pulls in enumerate(self.pulls):
            tokens = self.token_sums[arm] / self.observations[arm] if self.observations[arm] else None
            seconds = typical_seconds[arm]
            if not pulls or tokens is None:
                means.append(None)
            elif self.reward == "tokens_per_step":
                means.append(tokens)
            else:
                means.append(tokens / seconds if seconds else None)
        return means

    def _scores(self) -> list[float | None]:
        typical_seconds = self._typical_seconds()
        means = self.means(typical_seconds)
        total = sum(self.pulls)
        spread = self._pooled_token_std()
        scores: list[float | None] = []
        scale = max((mean for mean in means if mean is not None), default=0.0) or 1.0
        for arm, mean in enumerate(means):
            if mean is None:
                scores.append(None)
                continue
            seconds = typical_seconds[arm]
            unit_spread = spread if self.reward == "tokens_per_step" or not seconds else spread / seconds
            # Shared counts sharpen the mean, but the bonus shrinks with the arm's own pulls only:
            # its step time, which only pulls measure, may still rest on a step or two.
            width = unit_spread / math.sqrt(self.pulls[arm])
            if self.algorithm == "ucb":
                scores.append((mean + self.exploration * width * math.sqrt(2 * math.log(total))) / scale)
            else:
                scores.append(self.random.gauss(mean, width))
        return scores

    def _pooled_token_std(self) -> float:
        """Return the pooled within-arm standard deviation of committed tokens per step.

        Until some arm has two observations there is no within-arm spread, so the standard deviation
        of all observations (or 1 token, after a single one) replaces it.
        """
        degrees = sum(count - 1 for count in self.observations if count > 0)
        if degrees > 0:
            within = sum(squares - sums * sums / count for squares, sums, count
                         in zip(self.token_squares, self.token_sums, self.observations) if count > 0)
            return math.sqrt(max(within, 0.0) / degrees)
        total = sum(self.observations)
        if total < 2:
            return 1.0
        mean = sum(self.token_sums) / total
        return math.sqrt(max(sum(self.token_squares) / total - mean * mean, 0.0))

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
            "observations": list(self.observations),
            "token_sums": list(self.token_sums),
            "token_squares": list(self.token_squares),
            "recent_seconds": [list(recent) for recent in self.recent_seconds],
        }

    def load_statistics(self, decision: dict[str, Any]) -> None:
        """Start from the arm statistics of a previous run (a bandit step's `policy` record)."""
        if decision.get("kind") != "bandit" or decision.get("arms") != [format_shape(a) for a in self.arms]:
            raise MambavizError("The saved bandit statistics are for other arms; use the same arms as that run.")
        if decision.get("reward") != self.reward:
            raise MambavizError(f"The saved bandit statistics measure {decision.get('reward')} rewards, not"
                                f" {self.reward}; use the same reward as that run.")
        if any(field not in decision for field in ("observations", "token_sums", "token_squares", "recent_seconds")):
            raise MambavizError("The saved bandit statistics lack token counts and step times, which older versions"
                                " did not record; run the bandit once more to save statistics this version can load.")
        self.pulls = [int(pulls) for pulls in decision["pulls"]]
        self.observations = [int(count) for count in decision["observations"]]
        self.token_sums = [float(value) for value in decision["token_sums"]]
        self.token_squares = [float(value) for value in decision["token_squares"]]
        self.recent_seconds = [[float(value) for value in recent][-RECENT_STEPS:]
                               for recent in decision["recent_seconds"]]

    def describe(self) -> str:
        return f"{self.algorithm}[{';'.join(format_shape(arm) for arm in self.arms)}]"


def fits_inside(shape: tuple[int, ...], drafted: tuple[int, ...]) -> bool:
    """Return whether a tree of `shape` is the top-ranked part of a tree of shape `drafted`."""
    return len(shape) <= len(drafted) and all(mine <= theirs for mine, theirs in zip(shape, drafted))


def committed_within(shape: tuple[int, ...], accepted_ranks: list[int]) -> int:
    """Return the tokens a step would have committed with the top-ranked part `shape` of its tree.

    The path stops at the first accepted node whose sibling rank the shape does not keep, and the
    target's bonus token follows the last node kept.
    """
    accepted = 0
    for depth, rank in enumerate(accepted_ranks):
        if depth >= len(shape) or rank >= shape[depth]:
            break
        accepted += 1
    return accepted + 1


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

    def observe(self, plan: TreePlan, committed: int, seconds: float, accepted_ranks: list[int] | None = None) -> None:
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
    arms = tuple(parse_shape(part) for part in parts)
    repeated = sorted({format_shape(arm) for arm in arms if arms.count(arm) > 1})
    if repeated:
        raise MambavizError(f"Arm pool {text!r} lists {', '.join(repeated)} more than once; give each shape once.")
    return arms


def build_policy(tree: str, arms: str | None = None, reward: str = "tokens_per_second", seed: int = 0) -> ShapePolicy:
    """Build the policy that a `--tree` value names: a shape, `ucb`, `thompson` or `dynamic:NODES`."""
    text = tree.strip().lower()
    if text in BANDITS:
        pool = parse_arms(arms) if arms else DEFAULT_ARMS
        return ShapeBandit(pool, algorithm=text, reward=reward, seed=seed)
    if text.startswith("dynamic"):
        _, _, budget = text.partition(":")
        if not budget.strip().isdigit():
            raise MambavizError(f"Tree {tree!r} is invalid; write dynamic:NODES with a node budget, e.g. dynamic:32.")
        return DynamicTree(int(budget))
    return FixedShape(parse_shape(text))
