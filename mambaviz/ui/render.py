"""Turn traces into the values of the app's output components.

These functions build HTML, figures and Gradio updates from traces only, so live runs and replayed
trace files render the same way.
"""

from __future__ import annotations

import html

import gradio as gr

from mambaviz.compare import outputs_identical
from mambaviz.trace import StepRecord, Trace, summarize
from mambaviz.viz.metrics import (
    COMPARISON_HEADERS,
    accepted_length_figure,
    cache_figure,
    comparison_rows,
    format_bytes,
    progress_figure,
    run_label,
    step_time_figure,
    summary_html,
)
from mambaviz.viz.search import search_figure, search_table_html
from mambaviz.viz.text import output_html, token_html
from mambaviz.viz.tokens import quoted
from mambaviz.viz.tree import has_committed_bonus, shape_label, tree_figure


def clamp_position(trace: Trace | None, position: float | int | None) -> int:
    """Return a 1-based step position inside the trace, `default_position` when `position` is None."""
    count = len(trace.steps) if trace else 0
    if count == 0:
        return 1
    if position is None:
        return default_position(trace)
    return min(max(int(round(position)), 1), count)


def default_position(trace: Trace) -> int:
    """Return the last step that drafted a tree: the final step is often cut to a bare bonus token."""
    for step in reversed(trace.steps):
        if step.nodes:
            return step.index + 1
    return len(trace.steps)


def step_details_html(step: StepRecord, count: int) -> str:
    """Describe one step in a line: shape, committed tokens, times and cache sizes."""
    accepted = " ".join(quoted(text, 20) for text in step.committed_text[: len(step.accepted)])
    bonus = quoted(step.bonus_text, 20) if has_committed_bonus(step) else "none (run stopped)"
    parts = [
        f"<b>Step {step.index + 1} of {count}</b>",
        f"tree {html.escape(shape_label(step))}, {len(step.nodes)} nodes",
        f"root {quoted(step.root_text, 20)} at context length {step.context_length}",
        f"accepted: {accepted or 'none'}; bonus token: {bonus}",
        f"drafting {step.draft_seconds * 1000:.1f} ms, verification {step.verify_seconds * 1000:.1f} ms,"
        f" other {step.other_seconds * 1000:.1f} ms",
        f"drafter cache {format_bytes(step.drafter_cache_bytes)}, target KV cache {format_bytes(step.target_cache_bytes)}",
    ]
    if step.policy:
        parts.append(f"tree-shape policy: {html.escape(describe_decision(step.policy))}")
    return ('<div style="font-size: 13px; line-height: 1.6;">' + " · ".join(parts) + search_table_html(step)
            + "</div>")


def describe_decision(decision: dict) -> str:
    """Summarize a tree-shape policy's decision record in one phrase."""
    kind = decision.get("kind")
    if kind == "bandit":
        chosen = decision["chosen"]
        mean = decision["mean_rewards"][chosen]
        reward = "no reward yet" if mean is None else f"mean reward {mean:.2f} ({decision['reward']})"
        return (f"{decision['algorithm']} bandit chose {decision['arms'][chosen]}, pulled"
                f" {decision['pulls'][chosen]} times so far, {reward}")
    if kind == "dynamic":
        return (f"dynamic tree of at most {decision['node_budget']} nodes, depth {decision['max_depth']},"
                f" {decision['max_children']} children per node")
    return ", ".join(f"{key} {value}" for key, value in decision.items())


def step_view(trace: Trace | None, position: float | int | None) -> tuple:
    """Return (slider, tree figure, step details) for the step at 1-based `position`."""
    if trace is None or not trace.steps:
        return gr.Slider(minimum=1, maximum=1, value=1, interactive=False), None, ""
    count = len(trace.steps)
    position = clamp_position(trace, position)
    step = trace.steps[position - 1]
    slider = gr.Slider(minimum=1, maximum=max(count, 2), value=position, step=1, interactive=count > 1,
                       label=f"Step ({count} in this run)")
    return slider, tree_figure(step, count), step_details_html(step, count)


def run_status(trace: Trace, state: str) -> str:
    """Summarize a run in one line: `state` (running, done, stopped, replay) plus its figures."""
    figures = summarize(trace)
    line = (f"{figures['new_tokens']} tokens in {figures['steps']} steps with the {run_label(trace)},"
            f" {figures['tokens_per_second']:.1f} tokens/s, mean accepted length τ = {figures['mean_accepted_length']:.2f}")
    return f"**{state}**: {line}."


def metrics_charts(trace: Trace) -> tuple:
    runs = [(trace.settings.get("drafter", "run"), trace)]
    return step_time_figure(trace), accepted_length_figure(runs), cache_figure(runs)


def comparison_table(traces: dict[str, Trace]) -> dict:
    return {"headers": COMPARISON_HEADERS, "data": comparison_rows(traces)}


def comparison_charts(traces: dict[str, Trace]) -> tuple:
    runs = list(traces.items())
    return accepted_length_figure(runs), progress_figure(runs), cache_figure(runs, include_target=False)


def greedy_check_html(traces: dict[str, Trace]) -> str:
    """Show whether the runs' outputs are identical (required for greedy runs), with each run's text."""
    if not traces:
        return ""
    greedy = all(trace.settings.get("temperature", 0) == 0 for trace in traces.values())
    if greedy and outputs_identical(traces):
        tokens = len(next(iter(traces.values())).new_tokens)
        verdict = (f'<div data-check="identical" style="color: #1e7b34; font-weight: bold;">✓ Greedy outputs are'
                   f" identical across the {len(traces)} runs ({tokens} tokens): speculative decoding changed the"
                   f" speed, not the text.</div>")
    elif greedy:
        verdict = ('<div data-check="different" style="color: #b3261e; font-weight: bold;">✗ Greedy outputs'
                   f" differ: {html.escape(first_difference(traces))}. Speculative decoding must not change greedy"
                   " output, so this is a bug worth reporting with the trace files.</div>")
    else:
        verdict = ('<div data-check="sampling" style="color: #555;">Sampling runs: the outputs differ by design.'
                   " Each run samples from the target's distribution; the identity check applies to greedy runs."
                   "</div>")
    columns = "".join(
        f'<div style="flex: 1; min-width: 200px;"><div style="font-weight: bold;">{html.escape(run_label(trace))}</div>'
        f'<div style="white-space: pre-wrap; font-family: ui-monospace, monospace; font-size: 12px;'
        f' overflow-wrap: anywhere; border: 1px solid #ddd; border-radius: 4px; padding: 6px; max-height: 220px; overflow: auto;">'
        f"{token_html(trace.text)}</div></div>"
        for trace in traces.values()
    )
    return f'{verdict}<div style="display: flex; gap: 10px; margin-top: 8px;">{columns}</div>'


def first_difference(traces: dict[str, Trace]) -> str:
    """Describe the first token position where the runs' outputs disagree."""
    outputs = {name: trace.new_tokens for name, trace in traces.items()}
    length = max(len(tokens) for tokens in outputs.values())
    for position in range(length):
        seen = {name: tokens[position] if position < len(tokens) else None for name, tokens in outputs.items()}
        if len(set(seen.values())) > 1:
            values = ", ".join(f"{name}: {token}" for name, token in seen.items())
            return f"first difference at new token {position + 1} (token ids {values})"
    return "the outputs have different lengths"


def explorer_view(trace: Trace, status: str, download: str | None) -> tuple:
    """Return every explorer output for a finished, stopped or replayed run (see EXPLORER_OUTPUTS in layout)."""
    slider, figure, details = step_view(trace, None)
    step_chart, accepted_chart, cache_chart = metrics_charts(trace)
    download_update = gr.DownloadButton(value=download, interactive=download is not None)
    return (status, output_html(trace), figure, slider, details, summary_html(trace), step_chart, accepted_chart,
            cache_chart, search_figure(trace), download_update, trace)
