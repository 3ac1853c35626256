"""Figures and tables of the tree-shape policy: which arm a bandit chose at each step, and why.

Every function reads the `policy` records of a trace's steps (see docs/trace.md), so they serve
live runs and replays alike.
"""

from __future__ import annotations

import html

import plotly.graph_objects as go

from mambaviz.trace import StepRecord, Trace


def search_figure(trace: Trace) -> go.Figure:
    """Plot the bandit's chosen arm per step, or the dynamic tree's node count per step."""
    decisions = [(step.index + 1, step.policy) for step in trace.steps if step.policy]
    figure = go.Figure()
    if decisions and decisions[0][1].get("kind") == "bandit":
        arms = decisions[-1][1]["arms"]
        figure.add_trace(go.Scatter(
            x=[index for index, _ in decisions],
            y=[arms[decision["chosen"]] for _, decision in decisions],
            mode="markers", marker={"size": 9, "color": "#2ca02c"}, name="arm chosen",
            hovertemplate="step %{x}: %{y}<extra></extra>",
        ))
        figure.update_yaxes(type="category", categoryorder="array", categoryarray=arms, title="tree shape (arm)")
        title = f"{decisions[-1][1]['algorithm']} bandit: arm chosen at each step"
    elif decisions:
        counts = {step.index + 1: len(step.nodes) for step in trace.steps if step.policy}
        figure.add_trace(go.Bar(x=list(counts), y=list(counts.values()), name="nodes drafted",
                                marker_color="#1f77b4"))
        figure.update_yaxes(title="nodes drafted")
        title = "Dynamic tree: nodes drafted at each step"
    else:
        title = "Tree search: this run used a fixed tree shape"
    figure.update_layout(title=title, xaxis_title="step", height=320, margin={"l": 60, "r": 20, "t": 50, "b": 40},
                         showlegend=False)
    return figure


def search_table_html(step: StepRecord) -> str:
    """Tabulate every arm's pulls, mean reward and score as recorded at `step` (bandit runs only)."""
    decision = step.policy
    if not decision or decision.get("kind") != "bandit":
        return ""
    rows = []
    for arm, (shape, pulls, mean, score) in enumerate(zip(decision["arms"], decision["pulls"],
                                                         decision["mean_rewards"], decision["scores"])):
        chosen = arm == decision["chosen"]
        cells = [html.escape(shape) + (" ◀ chosen" if chosen else ""), str(pulls),
                 "–" if mean is None else f"{mean:.2f}", "–" if score is None else f"{score:.3f}"]
        style = ' style="font-weight: bold;"' if chosen else ""
        rows.append(f"<tr{style}>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    header = (f"<tr><th>arm (tree shape)</th><th>pulls</th><th>mean reward ({html.escape(decision['reward'])})</th>"
              f"<th>score when step {step.index + 1} chose</th></tr>")
    return ('<table class="search-table" style="font-size: 13px; margin-top: 6px;">' + header + "".join(rows)
            + "</table>")
