"""The draft tree of one step as a Plotly figure.

The tree is laid out left to right by depth: the root (the last committed token) at x = 0 and each
node at x = its depth. Leaves take consecutive rows in draft order and a parent sits midway between
its first and last child, so siblings stay together and the drafter's ranking reads top to bottom.
The target's bonus token hangs below the last accepted node (or the root) as its last child.
"""

from __future__ import annotations

import networkx as nx
import plotly.graph_objects as go

from mambaviz.trace import NodeRecord, StepRecord
from mambaviz.tree import format_shape
from mambaviz.viz.tokens import label, quoted

ROOT = "root"
BONUS = "bonus"

STATUS_STYLE = {
    # status: (legend name, colour, marker symbol); symbols keep statuses apart without colour vision.
    "accepted": ("accepted", "#2e9e48", "circle"),
    "rejected": ("rejected", "#d43d3d", "x"),
    "unvisited": ("unvisited", "#a8a8a8", "circle-open"),
    BONUS: ("bonus token", "#e0a000", "star"),
    ROOT: ("root (last committed token)", "#34495e", "square"),
}
ACCEPTED_PATH_COLOUR = "#2e9e48"
EDGE_COLOUR = "#c4c4c4"

ROW_PIXELS = 30  # vertical space per leaf row, enough for a label above each marker
MAX_VISIBLE_ROWS = 28  # larger trees open zoomed on the accepted path and are panned or zoomed out


class TreePlot(go.Figure):
    """A Plotly figure that also carries a Plotly `config` (scroll zoom on, logo off) in its JSON.

    Gradio's Plot component sends `to_json()` to the browser and applies a top-level `config` key
    when it finds one (checked in gradio 6.31's PlotlyPlot component), which plain figures lack.
    """

    def to_json(self, *args, **kwargs) -> str:
        import json

        data = json.loads(super().to_json(*args, **kwargs))
        data["config"] = {"scrollZoom": True, "displaylogo": False}
        return json.dumps(data)


def step_graph(step: StepRecord) -> nx.DiGraph:
    """Build the step's draft tree as a directed graph: ROOT, node ids, and BONUS when it was committed.

    Node attributes: `depth`, `status` and `record` (the NodeRecord, None for ROOT and BONUS).
    Children are added in draft order, which `successors` preserves.
    """
    graph = nx.DiGraph()
    graph.add_node(ROOT, depth=0, status=ROOT, record=None)
    for node in step.nodes:
        graph.add_node(node.id, depth=node.depth, status=node.status, record=node)
    for node in step.nodes:
        graph.add_edge(ROOT if node.parent < 0 else node.parent, node.id)

    if has_committed_bonus(step):
        parent = step.accepted[-1] if step.accepted else ROOT
        graph.add_node(BONUS, depth=graph.nodes[parent]["depth"] + 1, status=BONUS, record=None)
        graph.add_edge(parent, BONUS)
    return graph


def has_committed_bonus(step: StepRecord) -> bool:
    """Check whether the step committed its bonus token, which a stop at EOS or at the token limit can cut."""
    return len(step.committed) > len(step.accepted)


def layered_positions(graph: nx.DiGraph) -> dict:
    """Place each node at (depth, row): leaves on consecutive rows, parents midway between their children."""
    rows: dict = {}
    next_row = 0
    for node in nx.dfs_postorder_nodes(graph, ROOT):
        children = list(graph.successors(node))
        if children:
            rows[node] = (rows[children[0]] + rows[children[-1]]) / 2
        else:
            rows[node] = next_row
            next_row += 1
    return {node: (graph.nodes[node]["depth"], rows[node]) for node in graph}


def accepted_path_edges(step: StepRecord) -> list[tuple]:
    """Return the edges root → accepted nodes → bonus token, the path this step committed."""
    path = [ROOT, *step.accepted]
    if has_committed_bonus(step):
        path.append(BONUS)
    return list(zip(path, path[1:]))


def node_hover(node: NodeRecord) -> str:
    """Describe a drafted node for the hover box: token, depth, q, p, p/q, acceptance and decision."""
    ratio = node.target_prob / node.draft_prob if node.draft_prob > 0 else float("inf")
    if node.accept_prob is None:
        acceptance = "not tried"
    else:
        acceptance = f"{node.accept_prob:.3f}"
    decisions = {
        "accepted": "accepted: the target kept this token",
        "rejected": "rejected by the target",
        "unvisited": "not tried: an ancestor was rejected or a sibling was accepted first",
    }
    return "<br>".join([
        f"<b>{quoted(node.text)}</b> (token {node.token}, node {node.id})",
        f"depth {node.depth}",
        f"drafter probability q = {node.draft_prob:.4f} (whole path from the root {node.path_prob:.4f})",
        f"target probability p = {node.target_prob:.4f}",
        f"acceptance ratio p/q = {ratio:.3f}, acceptance probability {acceptance}",
        f"decision: {decisions.get(node.status, node.status)}",
    ])


def _special_hover(step: StepRecord, name: str) -> str:
    if name == ROOT:
        return "<br>".join([
            f"<b>{quoted(step.root_text)}</b> (token {step.root_token})",
            "root: the last committed token",
            f"context length {step.context_length}",
        ])
    return "<br>".join([
        f"<b>{quoted(step.bonus_text)}</b> (token {step.bonus_token})",
        "bonus token: the target's own token after the accepted path",
        f"depth {len(step.accepted) + 1}",
    ])


def _edge_trace(edges: list[tuple], positions: dict, name: str, line: dict, showlegend: bool) -> go.Scatter:
    xs: list = []
    ys: list = []
    for parent, child in edges:
        xs += [positions[parent][0], positions[child][0], None]
        ys += [positions[parent][1], positions[child][1], None]
    return go.Scatter(x=xs, y=ys, mode="lines", line=line, hoverinfo="skip", name=name, showlegend=showlegend)


def _node_trace(step: StepRecord, graph: nx.DiGraph, positions: dict, status: str) -> go.Scatter:
    names = [node for node in graph if graph.nodes[node]["status"] == status]
    legend_name, colour, symbol = STATUS_STYLE[status]
    labels, hovers = [], []
    for name in names:
        record = graph.nodes[name]["record"]
        if record is not None:
            labels.append(label(record.text))
            hovers.append(node_hover(record))
        else:
            labels.append(label(step.root_text if name == ROOT else step.bonus_text))
            hovers.append(_special_hover(step, name))
    return go.Scatter(
        x=[positions[name][0] for name in names],
        y=[positions[name][1] for name in names],
        mode="markers+text",
        name=legend_name,
        text=labels,
        textposition="top center",
        textfont={"size": 11},
        hovertext=hovers,
        hoverinfo="text",
        marker={"color": colour, "symbol": symbol, "size": 13 if status != BONUS else 17,
                "line": {"width": 2, "color": colour}},
        customdata=[str(name) for name in names],
        showlegend=True,
    )


def shape_label(step: StepRecord) -> str:
    """Name the tree shape a step used: its branching factors, the bandit arm, or the dynamic tree's budget."""
    decision = step.policy or {}
    if decision.get("kind") == "dynamic":
        return f"dynamic tree of at most {decision['node_budget']} nodes"
    if not step.shape:
        return "no draft"
    shape = format_shape(tuple(step.shape))
    if decision.get("kind") == "bandit":
        arm = decision["arms"][decision["chosen"]]
        if arm != shape:
            # The engine cuts a plan that would run past the token limit or the target's context.
            return f"shape {shape} ({decision['algorithm']} arm {arm}, cut to fit the token limit)"
        return f"shape {shape} ({decision['algorithm']} arm)"
    return f"shape {shape}"


def tree_figure(step: StepRecord, step_count: int | None = None) -> go.Figure:
    """Draw one step's draft tree: nodes by status, edges parent → child, the accepted path thicker.

    Node labels and hover text are escaped token texts. Trees of more than MAX_VISIBLE_ROWS leaf rows
    open zoomed on the accepted path so labels stay readable; pan or zoom out to see the rest.
    """
    graph = step_graph(step)
    positions = layered_positions(graph)
    path_edges = accepted_path_edges(step)
    path_edge_set = set(path_edges)
    other_edges = [edge for edge in graph.edges if edge not in path_edge_set]

    figure = TreePlot()
    figure.add_trace(_edge_trace(other_edges, positions, "draft edge", {"color": EDGE_COLOUR, "width": 1.2}, False))
    figure.add_trace(_edge_trace(path_edges, positions, "accepted path",
                                 {"color": ACCEPTED_PATH_COLOUR, "width": 5}, True))
    for status in (ROOT, "accepted", "rejected", "unvisited", BONUS):
        figure.add_trace(_node_trace(step, graph, positions, status))

    row_count = int(max(row for _, row in positions.values())) + 1
    visible_rows = min(row_count, MAX_VISIBLE_ROWS)
    yaxis = {"visible": False, "autorange": "reversed"}
    if row_count > MAX_VISIBLE_ROWS:
        last = step.accepted[-1] if step.accepted else ROOT
        if BONUS in positions:
            last = BONUS
        centre = positions[last][1]
        top = min(max(centre - MAX_VISIBLE_ROWS / 2, -0.8), row_count - MAX_VISIBLE_ROWS)
        yaxis = {"visible": False, "range": [top + MAX_VISIBLE_ROWS, top - 0.8]}
    max_depth = max(depth for depth, _ in positions.values())

    title = f"Step {step.index + 1}" + (f" of {step_count}" if step_count else "")
    nodes = f"{len(step.nodes)} drafted node" + ("" if len(step.nodes) == 1 else "s")
    title += f": {shape_label(step)}, {nodes}, accepted length {step.accepted_length}"
    if has_committed_bonus(step):
        title += f" ({len(step.accepted)} drafted + bonus)"
    if step.stop_reason:
        title += f", run stopped ({step.stop_reason})"
    figure.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 14}},
        height=visible_rows * ROW_PIXELS + 150,
        margin={"l": 20, "r": 20, "t": 80, "b": 30},
        xaxis={"title": {"text": "depth"}, "dtick": 1, "range": [-0.5, max_depth + 0.5], "zeroline": False,
               "showgrid": False},
        yaxis=yaxis,
        plot_bgcolor="white",
        dragmode="pan",
        hovermode="closest",
        hoverlabel={"align": "left"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0},
        uirevision=f"step-{step.index}",
    )
    return figure
