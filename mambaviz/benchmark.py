"""Engine benchmarks: drafting time and cache bytes against context length, and bookkeeping share.

Every comparison is measured side by side in one process: the repeats loop over context lengths
and drafters in turn, so slow phases of a shared machine hit all of them alike, and results are
reported as ratios.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass

import torch

from mambaviz.engine import RunSettings, build_drafter, encode_prompt, generate
from mambaviz.errors import MambavizError
from mambaviz.metrics import ForwardClock, now
from mambaviz.models import ModelSet
from mambaviz.sampling import SamplingConfig
from mambaviz.search import FixedShape
from mambaviz.trace import Trace
from mambaviz.verify import Target

logger = logging.getLogger(__name__)

SWEEP_SHAPE = (3, 2, 2, 1, 1)


@dataclass
class ContextPoint:
    """Median figures of one (component, context length) pair."""

    component: str  # mamba, transformer (drafting) or target (verification)
    context_length: int
    ms_per_token: float  # drafting: per drafted token; target: per tree token verified
    cache_bytes: int


def parse_lengths(text: str, maximum: int | None = None) -> list[int]:
    """Parse comma-separated context lengths such as `128,512,2048` into a sorted list without repeats."""
    try:
        lengths = sorted({int(length) for length in text.split(",") if length.strip()})
    except ValueError:
        raise MambavizError(f"Lengths {text!r} are invalid; write whole numbers separated by commas.") from None
    if not lengths:
        raise MambavizError(f"Lengths {text!r} are missing; write whole numbers separated by commas, e.g. 128,512.")
    if lengths[0] < 2:
        raise MambavizError(f"Lengths {text!r} are invalid; every context length must be at least 2 tokens.")
    if maximum is not None and lengths[-1] > maximum:
        raise MambavizError(f"Length {lengths[-1]} is too long here; use context lengths of at most {maximum} tokens.")
    return lengths


def context_ids(models: ModelSet, length: int, seed: int = 0) -> list[int]:
    """Draw a context of `length` random token ids; the timings do not depend on the content."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, models.vocab_size, (length,), generator=generator).tolist()


def context_sweep(
    models: ModelSet,
    lengths: list[int],
    drafters: tuple[str, ...] = ("mamba", "transformer"),
    shape: tuple[int, ...] = SWEEP_SHAPE,
    repeats: int = 10,
    include_target: bool = True,
) -> list[ContextPoint]:
    """Time drafting one tree of `shape` (and the target verifying it) at each context length.

    Each drafter is prefilled once per length. Each repeat drafts a tree and then commits only the
    bonus token, so the context grows by one token per repeat.
    """
    sampling = SamplingConfig()
    states = {}
    for name in drafters:
        for length in lengths:
            drafter = build_drafter(models, name, ForwardClock(models.device))
            drafter.prefill(context_ids(models, length))
            states[(name, length)] = drafter
    targets = {}
    if include_target:
        for length in lengths:
            target = Target(models.target, models.vocab_size, ForwardClock(models.device))
            target.prefill(context_ids(models, length))
            targets[length] = target

    times: dict[tuple[str, int], list[float]] = {key: [] for key in states}
    times.update({("target", length): [] for length in targets})
    for _ in range(repeats):
        for length in lengths:
            for name in drafters:
                drafter = states[(name, length)]
                start = now(models.device)
                tree = drafter.draft(shape, sampling, None)
                times[(name, length)].append((now(models.device) - start) / len(tree))
                drafter.commit(tree, [], tree.tokens[0])
                if length in targets:
                    target = targets[length]
                    start = now(models.device)
                    target.verify(tree)
                    times[("target", length)].append((now(models.device) - start) / (len(tree) + 1))
                    target.commit([])

    points = []
    for (component, length), samples in times.items():
        if component == "target":
            cache = targets[length].cache_bytes()
        else:
            cache = states[(component, length)].cache_bytes()
        points.append(ContextPoint(component, length, 1000 * statistics.median(samples), cache))
    return points


def growth_ratios(points: list[ContextPoint]) -> dict[str, float]:
    """Per component: ms per token at the longest context ÷ at the shortest."""
    ratios = {}
    for component in sorted({point.component for point in points}):
        mine = sorted((p for p in points if p.component == component), key=lambda p: p.context_length)
        ratios[component] = mine[-1].ms_per_token / mine[0].ms_per_token
    return ratios


def bookkeeping_share(
    models: ModelSet, prompts: list[str], drafter: str, shape: tuple[int, ...], max_new_tokens: int = 64
) -> float:
    """Fraction of step time spent outside model forward passes, over greedy runs of `prompts`."""
    step_seconds = forward_seconds = 0.0
    for prompt in prompts:
        trace = Trace(settings={}, prompt_ids=[])
        settings = RunSettings(drafter, max_new_tokens)
        for step in generate(models, encode_prompt(models, prompt), settings, FixedShape(shape), trace):
            step_seconds += step.step_seconds
            forward_seconds += step.forward_seconds
    return 1 - forward_seconds / step_seconds
