"""One prompt and one set of settings run with several drafters, interleaved step by step.

Machines that serve demos are shared and noisy, so the runs advance in turns, one step of each per
round, rather than one after another. A slow patch of the machine then slows every run alike, and
the speedup (a ratio of tokens/s measured side by side) stays fair.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace

from mambaviz.engine import RunSettings, describe_settings, encode_prompt, generate
from mambaviz.models import ModelSet
from mambaviz.search import ShapePolicy
from mambaviz.trace import Trace, summarize

logger = logging.getLogger(__name__)

COMPARED_DRAFTERS = ("mamba", "transformer", "none")


def compare_runs(
    models: ModelSet,
    prompt: str,
    settings: RunSettings,
    make_policy: Callable[[], ShapePolicy],
    drafters: tuple[str, ...] = COMPARED_DRAFTERS,
) -> Iterator[dict[str, Trace]]:
    """Run `prompt` once per drafter and yield the traces (by drafter name) after every round of steps.

    Each run gets its own policy from `make_policy`, so adaptive policies do not share what they
    learn. Finished runs get their decoded text. Closing the iterator early stops all runs and
    leaves the traces with the steps done so far.
    """
    prompt_ids = encode_prompt(models, prompt)
    traces: dict[str, Trace] = {}
    runs = {}
    for name in drafters:
        run_settings = replace(settings, drafter=name)
        policy = make_policy()
        traces[name] = Trace(settings=describe_settings(models, prompt, run_settings, policy), prompt_ids=prompt_ids)
        runs[name] = generate(models, prompt_ids, run_settings, policy, traces[name])

    active = list(drafters)
    try:
        while active:
            for name in list(active):
                if next(runs[name], None) is None:
                    active.remove(name)
            yield traces
    finally:
        for name, trace in traces.items():
            runs[name].close()
            finish_trace(models, trace)


def finish_trace(models: ModelSet, trace: Trace) -> None:
    """Decode the trace's new tokens into `trace.text` and log the run's figures."""
    trace.text = models.tokenizer.decode(trace.new_tokens)
    figures = summarize(trace)
    logger.info("run drafter=%s tree=%s: %d tokens in %d steps, %.1f tokens/s, mean accepted length %.2f",
                trace.settings.get("drafter"), trace.settings.get("tree"), figures["new_tokens"], figures["steps"],
                figures["tokens_per_second"], figures["mean_accepted_length"])


def outputs_identical(traces: dict[str, Trace]) -> bool:
    """Check whether every run committed the same tokens, as greedy decoding requires of a correct engine."""
    outputs = [trace.new_tokens for trace in traces.values()]
    return all(output == outputs[0] for output in outputs)
