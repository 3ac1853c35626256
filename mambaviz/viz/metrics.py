"""A run's figures as tables and Plotly charts, for one trace or several traces side by side.

Charts that compare runs take `runs`, a list of (name, trace) pairs, and draw one line per run.
"""

from __future__ import annotations

import html
import itertools

import plotly.graph_objects as go

from mambaviz.trace import Trace, summarize

DRAFTER_LABELS = {"mamba": "Mamba drafter", "transformer": "Transformer drafter", "none": "target alone"}
RUN_COLOURS = {"mamba": "#1f77b4", "transformer": "#ff7f0e", "none": "#7f7f7f"}
TIME_COLOURS = {"draft": "#4c9be8", "verify": "#e8884c", "other": "#b5b5b5"}
MIB = 2**20
COMPARISON_HEADERS = ["run", "tokens/s", "speedup", "τ", "acceptance rate", "drafting ms/token", "drafter cache",
                      "peak memory"]


def format_bytes(count: int | float) -> str:
    """Format a byte count with binary units, e.g. 1.50 MiB."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.2f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_rate(rate: float | None) -> str:
    return "n/a (nothing drafted)" if rate is None else f"{rate:.1%}"


def run_label(trace: Trace) -> str:
    drafter = trace.settings.get("drafter", "?")
    return DRAFTER_LABELS.get(drafter, str(drafter))


def summary_rows(trace: Trace) -> list[tuple[str, str]]:
    """Return (figure, value) rows summarizing a run; values are plain text, not yet escaped."""
    figures = summarize(trace)
    decode = figures["decode_seconds"]

    def share(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms ({seconds / decode:.0%})" if decode > 0 else f"{seconds * 1000:.1f} ms"

    by_depth = figures["acceptance_rate_by_depth"]
    depth_text = ", ".join(f"depth {depth}: {rate:.0%}" for depth, rate in by_depth.items()) or "n/a"
    return [
        ("drafter", run_label(trace)),
        ("tree shape", str(trace.settings.get("tree", "?"))),
        ("new tokens / steps", f"{figures['new_tokens']} tokens in {figures['steps']} steps"),
        ("tokens/s", f"{figures['tokens_per_second']:.1f}"),
        ("mean accepted length τ", f"{figures['mean_accepted_length']:.2f}"),
        ("acceptance rate", format_rate(figures["acceptance_rate"])),
        ("acceptance rate by depth", depth_text),
        ("drafting time", share(figures["draft_seconds"])),
        ("verification time", share(figures["verify_seconds"])),
        ("other time (acceptance, cache compaction)", share(figures["other_seconds"])),
        ("prefill time", f"{figures['prefill_seconds'] * 1000:.1f} ms"),
        ("drafter cache (end / max)",
         f"{format_bytes(figures['drafter_cache_bytes'])} / {format_bytes(figures['max_drafter_cache_bytes'])}"),
        ("target KV cache (end)", format_bytes(figures["target_cache_bytes"])),
        ("peak memory", f"{format_bytes(figures['peak_memory_bytes'])} ({_peak_memory_kind(trace)})"),
        ("stopped by", str(figures["stop_reason"] or "still running")),
    ]


def _peak_memory_kind(trace: Trace) -> str:
    device = str(trace.settings.get("device", "cpu"))
    return "CUDA memory allocated by torch" if device.startswith("cuda") else "process peak RSS"


def summary_html(trace: Trace) -> str:
    rows = "".join(f'<tr><th style="text-align: left; padding: 2px 12px 2px 0;">{html.escape(name)}</th>'
                   f"<td>{html.escape(value)}</td></tr>" for name, value in summary_rows(trace))
    return f'<table class="mambaviz-summary" style="font-size: 14px;">{rows}</table>'


def _base_layout(figure: go.Figure, title: str, x_title: str, y_title: str, height: int = 320) -> go.Figure:
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 14}},
        height=height,
        margin={"l": 60, "r": 20, "t": 70, "b": 50},
        xaxis={"title": {"text": x_title}},
        yaxis={"title": {"text": y_title}},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "right", "x": 1},
        plot_bgcolor="white",
        hovermode="x unified",
    )
    figure.update_xaxes(showgrid=True, gridcolor="#eeeeee")
    figure.update_yaxes(showgrid=True, gridcolor="#eeeeee")
    return figure


def step_time_figure(trace: Trace) -> go.Figure:
    """Stack each step's drafting, verification and other time (ms) as bars."""
    steps = [step.index + 1 for step in trace.steps]
    figure = go.Figure()
    for part, attribute in (("draft", "draft_seconds"), ("verify", "verify_seconds"), ("other", "other_seconds")):
        figure.add_trace(go.Bar(
            x=steps, y=[getattr(step, attribute) * 1000 for step in trace.steps],
            name={"draft": "drafting", "verify": "verification", "other": "other"}[part],
            marker_color=TIME_COLOURS[part],
        ))
    figure.update_layout(barmode="stack", bargap=0.1)
    return _base_layout(figure, "Time per step", "step", "ms")


def _colour(name: str, fallback: itertools.cycle) -> str:
    return RUN_COLOURS.get(name) or next(fallback)


def accepted_length_figure(runs: list[tuple[str, Trace]]) -> go.Figure:
    """Plot each step's accepted length (bonus included), one line per run, τ in the legend."""
    figure = go.Figure()
    fallback = itertools.cycle(["#2ca02c", "#9467bd", "#8c564b"])
    for name, trace in runs:
        tau = summarize(trace)["mean_accepted_length"]
        figure.add_trace(go.Scatter(
            x=[step.index + 1 for step in trace.steps], y=[step.accepted_length for step in trace.steps],
            mode="lines+markers", name=f"{DRAFTER_LABELS.get(name, name)} (τ = {tau:.2f})",
            line={"color": _colour(name, fallback), "shape": "hv"}, marker={"size": 5},
        ))
    figure.update_yaxes(rangemode="tozero", dtick=1)
    return _base_layout(figure, "Accepted length per step", "step", "tokens committed")


def cache_figure(runs: list[tuple[str, Trace]], include_target: bool = True) -> go.Figure:
    """Plot drafter cache size (MiB) against context length, one line per run, plus the target's KV cache.

    The x value of a step is the context length after it committed its tokens, when its cache sizes
    were measured.
    """
    figure = go.Figure()
    fallback = itertools.cycle(["#2ca02c", "#9467bd", "#8c564b"])
    for name, trace in runs:
        if trace.settings.get("drafter") == "none":
            continue
        figure.add_trace(go.Scatter(
            x=[step.context_length + step.accepted_length for step in trace.steps],
            y=[step.drafter_cache_bytes / MIB for step in trace.steps],
            mode="lines", name=f"{DRAFTER_LABELS.get(name, name)} cache", line={"color": _colour(name, fallback)},
        ))
    if include_target and runs:
        name, trace = runs[0]
        figure.add_trace(go.Scatter(
            x=[step.context_length + step.accepted_length for step in trace.steps],
            y=[step.target_cache_bytes / MIB for step in trace.steps],
            mode="lines", name="target KV cache", line={"color": "#444444", "dash": "dot"},
        ))
    figure.update_yaxes(rangemode="tozero")
    return _base_layout(figure, "Cache size against context length", "context length (tokens)", "MiB")


def _component_label(component: str) -> str:
    return "target verification" if component == "target" else DRAFTER_LABELS.get(component, component)


def context_figures(points) -> tuple[go.Figure, go.Figure]:
    """Plot a context sweep's `ContextPoint`s: ms per token, and cache bytes, against context length."""
    timing, cache = go.Figure(), go.Figure()
    fallback = itertools.cycle(["#2ca02c", "#9467bd", "#8c564b"])
    for component in sorted({point.component for point in points}):
        mine = sorted((p for p in points if p.component == component), key=lambda p: p.context_length)
        x = [p.context_length for p in mine]
        colour = "#444444" if component == "target" else _colour(component, fallback)
        label = _component_label(component)
        timing.add_trace(go.Scatter(x=x, y=[p.ms_per_token for p in mine], mode="lines+markers", name=label,
                                    line={"color": colour}))
        cache_label = "target KV cache" if component == "target" else label
        cache.add_trace(go.Scatter(x=x, y=[p.cache_bytes / MIB for p in mine], mode="lines+markers",
                                   name=cache_label, line={"color": colour}))
    _base_layout(timing, "Time per drafted or verified token", "context length (tokens)", "ms per token")
    _base_layout(cache, "Cache size against context length", "context length (tokens)", "MiB (log scale)")
    timing.update_yaxes(rangemode="tozero")
    # A log axis keeps the Mamba state's flat line apart from zero beside KV caches of many MiB.
    cache.update_yaxes(type="log")
    for figure in (timing, cache):
        figure.update_layout(hovermode="closest")
    return timing, cache


def context_table_html(points, ratios: dict[str, float]) -> str:
    """Tabulate a context sweep: one row per context length, ms per token and cache size per component."""
    components = sorted({point.component for point in points})
    lengths = sorted({point.context_length for point in points})
    by_key = {(point.component, point.context_length): point for point in points}
    labels = {name: _component_label(name) for name in components}
    cell = 'style="text-align: right; padding: 2px 10px;"'
    header = "".join(f"<th {cell}>{html.escape(labels[name])} ms/token</th>" for name in components)
    header += "".join(f"<th {cell}>{'target KV' if name == 'target' else html.escape(labels[name])} cache</th>"
                      for name in components)
    rows = []
    for length in lengths:
        values = [f"{by_key[(name, length)].ms_per_token:.3f}" for name in components]
        values += [format_bytes(by_key[(name, length)].cache_bytes) for name in components]
        rows.append(f"<tr><td {cell}>{length:,}</td>" + "".join(f"<td {cell}>{value}</td>" for value in values) + "</tr>")
    table = f'<table style="font-size: 14px;"><tr><th {cell}>context (tokens)</th>{header}</tr>{"".join(rows)}</table>'
    if len(lengths) < 2:
        return table
    growth = ", ".join(f"{html.escape(labels[name])} {ratios[name]:.2f}×" for name in components if name in ratios)
    return table + f"<p>ms per token at the longest ÷ the shortest context: {growth}.</p>"


def progress_figure(runs: list[tuple[str, Trace]]) -> go.Figure:
    """Plot committed tokens against decoding time (prefill excluded), one line per run: steeper is faster."""
    figure = go.Figure()
    fallback = itertools.cycle(["#2ca02c", "#9467bd", "#8c564b"])
    for name, trace in runs:
        seconds = list(itertools.accumulate(step.step_seconds for step in trace.steps))
        tokens = list(itertools.accumulate(step.accepted_length for step in trace.steps))
        figure.add_trace(go.Scatter(x=[0.0, *seconds], y=[0, *tokens], mode="lines",
                                    name=DRAFTER_LABELS.get(name, name), line={"color": _colour(name, fallback)}))
    figure.update_layout(hovermode="closest")
    return _base_layout(figure, "Tokens committed over time", "decoding time (s)", "tokens")


def comparison_rows(runs: dict[str, Trace]) -> list[list[str]]:
    """Return one table row per run in COMPARISON_HEADERS order.

    Speedup is tokens/s over the tokens/s of the `none` run (the target alone) among `runs`.
    """
    figures = {name: summarize(trace) for name, trace in runs.items()}
    baseline = figures.get("none", {}).get("tokens_per_second", 0.0)
    rows = []
    for name, trace in runs.items():
        summary = figures[name]
        speedup = summary["tokens_per_second"] / baseline if baseline > 0 else None
        draft_ms = summary["draft_seconds"] * 1000 / summary["new_tokens"] if summary["new_tokens"] else 0.0
        rows.append([
            DRAFTER_LABELS.get(name, name),
            f"{summary['tokens_per_second']:.1f}",
            "n/a" if speedup is None else f"{speedup:.2f}×",
            f"{summary['mean_accepted_length']:.2f}",
            format_rate(summary["acceptance_rate"]),
            f"{draft_ms:.2f}",
            format_bytes(summary["drafter_cache_bytes"]),
            format_bytes(summary["peak_memory_bytes"]),
        ])
    return rows
