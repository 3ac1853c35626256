"""Figure and HTML builders against hand-written traces: nodes, edges, colours, hover text, escaping."""

import json
import time

import pytest

from mambaviz.compare import outputs_identical
from mambaviz.ui.render import default_position, greedy_check_html, step_details_html
from mambaviz.viz.metrics import (
    accepted_length_figure,
    cache_figure,
    comparison_rows,
    format_bytes,
    progress_figure,
    step_time_figure,
    summary_rows,
)
from mambaviz.viz.text import SHADES, output_html
from mambaviz.viz.tokens import label, visible
from mambaviz.viz.tree import (
    BONUS,
    MAX_VISIBLE_ROWS,
    ROOT,
    STATUS_STYLE,
    layered_positions,
    step_graph,
    tree_figure,
)
from tests.trace_factory import ATTACK, ESCAPED_ATTACK, make_step, make_trace, node

def trace_by_name(figure, name):
    matches = [trace for trace in figure.data if trace.name == name]
    assert len(matches) == 1, f"expected one trace named {name!r}, found {len(matches)}"
    return matches[0]


# ----- tokens -------------------------------------------------------------------------------------


def test_visible_replaces_whitespace_and_controls():
    assert visible(" a\nb\tc\r\x00") == "␣a↵b⇥c␍␀"


def test_label_escapes_and_shortens():
    assert label(ATTACK, max_chars=40) == "&lt;img␣src=x␣onerror=alert(1)&gt;"
    assert label("abcdefghijklmnop", max_chars=5) == "abcd…"
    assert label('say "hi" & bye', max_chars=40) == 'say␣"hi"␣&amp;␣bye'


# ----- tree ---------------------------------------------------------------------------------------


def test_step_graph_nodes_and_edges():
    graph = step_graph(make_step())
    assert set(graph.nodes) == {ROOT, 0, 1, 2, 3, 4, 5, BONUS}
    assert set(graph.edges) == {(ROOT, 0), (ROOT, 1), (0, 2), (0, 3), (2, 4), (3, 5), (2, BONUS)}
    assert graph.nodes[BONUS]["depth"] == 3


def test_step_graph_omits_bonus_cut_by_stop():
    step = make_step(committed_text=[" add", "("], stop_reason="max_new_tokens")
    assert BONUS not in step_graph(step)


def test_layered_positions_centre_parents():
    positions = layered_positions(step_graph(make_step()))
    assert positions[ROOT][0] == 0
    assert positions[4] == (3, 0)
    assert positions[BONUS] == (3, 1)
    assert positions[2] == (2, 0.5)
    assert positions[5] == (3, 2)
    assert positions[0] == (1, 1.25)
    assert positions[1] == (1, 3)


def test_tree_figure_colours_symbols_and_counts():
    figure = tree_figure(make_step(), step_count=4)
    expected_counts = {"accepted": 2, "rejected": 2, "unvisited": 2, "bonus token": 1,
                       "root (last committed token)": 1}
    for status, (name, colour, symbol) in STATUS_STYLE.items():
        trace = trace_by_name(figure, name)
        assert len(trace.x) == expected_counts[name]
        assert trace.marker.color == colour
        assert trace.marker.symbol == symbol
    assert figure.layout.title.text.startswith("Step 1 of 4: shape 2,2,1, 6 drafted nodes")


def test_tree_figure_thick_accepted_path():
    figure = tree_figure(make_step())
    path = trace_by_name(figure, "accepted path")
    edges = trace_by_name(figure, "draft edge")
    assert path.line.width > edges.line.width
    # root (0, 2.125) → node 0 (1, 1.25) → node 2 (2, 0.5) → bonus (3, 1), as segments split by None
    assert list(path.x) == [0, 1, None, 1, 2, None, 2, 3, None]
    assert list(path.y) == [2.125, 1.25, None, 1.25, 0.5, None, 0.5, 1, None]
    assert list(edges.x).count(None) == 4


def test_tree_figure_hover_shows_probabilities_and_decision():
    figure = tree_figure(make_step())
    rejected = trace_by_name(figure, "rejected")
    hover = rejected.hovertext[list(rejected.customdata).index("3")]
    assert "“↵”" in hover
    assert "depth 2" in hover
    assert "drafter probability q = 0.4000" in hover
    assert "target probability p = 0.0500" in hover
    assert "acceptance ratio p/q = 0.125" in hover
    assert "acceptance probability 0.000" in hover
    assert "decision: rejected" in hover
    unvisited = trace_by_name(figure, "unvisited")
    assert all("not tried" in text for text in unvisited.hovertext)


def test_tree_figure_escapes_token_in_label_and_hover():
    figure = tree_figure(make_step())
    unvisited = trace_by_name(figure, "unvisited")
    position = list(unvisited.customdata).index("1")
    assert unvisited.text[position] == "&lt;img␣src=x␣…"
    assert ESCAPED_ATTACK.replace(" ", "␣") in unvisited.hovertext[position]
    serialized = figure.to_json()
    assert "<img" not in serialized
    assert json.loads(serialized)["config"]["scrollZoom"] is True


def test_tree_figure_512_nodes():
    nodes = []
    frontier = [-1]
    for depth in range(1, 10):  # shape (2,)*8 has 510 nodes; a ninth level of one child each reaches 512
        next_frontier = []
        for parent in frontier:
            for _ in range(2 if depth <= 8 else 1):
                if len(nodes) == 512:
                    break
                nodes.append(node(len(nodes), parent, depth, f"t{len(nodes)}", "unvisited"))
                next_frontier.append(len(nodes) - 1)
        frontier = next_frontier
    nodes[0].status = nodes[2].status = "accepted"
    step = make_step(nodes=nodes, accepted=(0, 2))

    start = time.perf_counter()
    figure = tree_figure(step)
    elapsed = time.perf_counter() - start

    marker_points = sum(len(trace.x) for trace in figure.data if trace.mode == "markers+text")
    assert marker_points == 512 + 2  # the drafted nodes plus root and bonus
    low, high = sorted(figure.layout.yaxis.range)
    assert high - low == pytest.approx(MAX_VISIBLE_ROWS + 0.8)
    assert figure.layout.dragmode == "pan"
    assert elapsed < 2.0


def test_tree_figure_for_target_alone_step():
    step = make_step(nodes=[], accepted=(), committed_text=["x"])
    figure = tree_figure(step)
    assert len(trace_by_name(figure, "bonus token").x) == 1
    assert len(trace_by_name(figure, "accepted").x) == 0


# ----- output text --------------------------------------------------------------------------------


def test_output_html_colours_by_origin():
    trace = make_trace([make_step(index=0), make_step(index=1, committed_text=[" add", "(", ATTACK])])
    page = output_html(trace)
    assert page.count('data-origin="accepted"') == 4
    assert page.count('data-origin="bonus"') == 2
    assert f'title="step 1: accepted draft token" data-step="1" data-origin="accepted" style="background: ' \
           f'{SHADES["accepted"][0]}' in page
    assert f'title="step 2: bonus token from the target" data-step="2" data-origin="bonus" style="background: ' \
           f'{SHADES["bonus"][1]}' in page


def test_output_html_escapes_and_marks_whitespace():
    trace = make_trace([make_step(committed_text=[ATTACK, "\n", "\t"], accepted=(0, 2))], prompt="<b>p</b>")
    page = output_html(trace)
    assert ATTACK not in page
    assert "<img" not in page
    assert ESCAPED_ATTACK in page
    assert "&lt;b&gt;p&lt;/b&gt;" in page
    assert "↵</span>\n" in page
    assert "⇥</span>\t" in page


def test_step_details_escape_tokens():
    details = step_details_html(make_step(committed_text=[ATTACK, "(", "x"]), 1)
    assert "<img" not in details
    assert "Step 1 of 1" in details


# ----- metrics ------------------------------------------------------------------------------------


def test_summary_rows_report_rates_and_bytes():
    rows = dict(summary_rows(make_trace([make_step(), make_step(index=1)])))
    assert rows["new tokens / steps"] == "6 tokens in 2 steps"
    assert rows["mean accepted length τ"] == "3.00"
    # visited nodes per step: 0, 2 accepted; 3, 4 rejected → 50 %; depth 1: 1/1, depth 2: 1/2, depth 3: 0/1
    assert rows["acceptance rate"] == "50.0%"
    assert rows["acceptance rate by depth"] == "depth 1: 100%, depth 2: 50%, depth 3: 0%"
    assert rows["drafting time"] == "20.0 ms (32%)"
    assert rows["target KV cache (end)"] == "4.88 KiB"
    assert rows["tokens/s"] == f"{6 / 0.062:.1f}"


def test_format_bytes_units():
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.50 KiB"
    assert format_bytes(3 * 2**30) == "3.00 GiB"


def test_step_time_figure_stacks_milliseconds():
    figure = step_time_figure(make_trace([make_step(), make_step(index=1, draft=0.004)]))
    assert figure.layout.barmode == "stack"
    assert list(trace_by_name(figure, "drafting").y) == pytest.approx([10.0, 4.0])
    assert list(trace_by_name(figure, "verification").y) == pytest.approx([20.0, 20.0])
    assert list(trace_by_name(figure, "drafting").x) == [1, 2]


def test_run_charts_plot_accepted_length_cache_and_progress():
    trace = make_trace([make_step(context_length=5), make_step(index=1, context_length=8, drafter_cache=2000)])
    accepted = accepted_length_figure([("mamba", trace)])
    assert list(accepted.data[0].y) == [3, 3]
    assert "τ = 3.00" in accepted.data[0].name
    cache = cache_figure([("mamba", trace)])
    assert list(cache.data[0].x) == [8, 11]
    assert list(cache.data[0].y) == pytest.approx([1000 / 2**20, 2000 / 2**20])
    assert cache.data[1].name == "target KV cache"
    progress = progress_figure([("mamba", trace)])
    assert list(progress.data[0].y) == [0, 3, 6]
    assert list(progress.data[0].x) == pytest.approx([0.0, 0.031, 0.062])


def test_comparison_rows_speedup_over_target_alone():
    fast = make_trace([make_step()], drafter="mamba")
    baseline = make_trace([make_step(nodes=[], accepted=(), committed_text=["x"], draft=0.0, verify=0.01,
                                     other=0.0, drafter_cache=0)], drafter="none")
    rows = {row[0]: row for row in comparison_rows({"mamba": fast, "none": baseline})}
    # mamba: 3 tokens in 31 ms = 96.8 tokens/s; target alone: 1 token in 10 ms = 100 tokens/s
    assert rows["Mamba drafter"][1] == "96.8"
    assert rows["Mamba drafter"][2] == "0.97×"
    assert rows["target alone"][2] == "1.00×"
    assert rows["Mamba drafter"][5] == f"{10 / 3:.2f}"
    assert rows["target alone"][4] == "n/a (nothing drafted)"


def test_greedy_check_reports_identical_and_different_outputs():
    same = {"mamba": make_trace([make_step()]), "none": make_trace([make_step()], drafter="none")}
    assert outputs_identical(same)
    assert 'data-check="identical"' in greedy_check_html(same)

    other = make_step()
    other.committed = [1, 1, 2]
    different = {"mamba": make_trace([make_step()]), "none": make_trace([other], drafter="none")}
    assert not outputs_identical(different)
    page = greedy_check_html(different)
    assert 'data-check="different"' in page
    assert "new token 3" in page


def test_default_position_skips_final_step_without_tree():
    trace = make_trace([make_step(index=0), make_step(index=1, nodes=[], accepted=(), committed_text=["x"])])
    assert default_position(trace) == 1


def test_step_details_describe_bandit_choice():
    step = make_step()
    step.policy = {"kind": "bandit", "algorithm": "ucb", "reward": "tokens_per_step", "arms": ["1,1", "3,2,2,1,1"],
                   "chosen": 1, "pulls": [1, 2], "mean_rewards": [1.0, 2.5], "scores": [None, None],
                   "reward_sums": [1.0, 5.0], "reward_squares": [1.0, 12.5]}
    details = step_details_html(step, 1)
    assert "ucb bandit chose 3,2,2,1,1, pulled 2 times so far, mean reward 2.50 (tokens_per_step)" in details


def bandit_trace(code_models):
    from mambaviz.engine import RunSettings, run
    from mambaviz.search import build_policy

    return run(code_models, "def add(a, b):", RunSettings("mamba", 24), build_policy("ucb", "1,1;2,2,1;3,1"))


def test_search_figure_marks_arm_chosen_per_step(code_models):
    from mambaviz.viz.search import search_figure

    trace = bandit_trace(code_models)
    figure = search_figure(trace)
    points = figure.data[0]
    assert list(points.x) == [step.index + 1 for step in trace.steps]
    assert list(points.y) == [step.policy["arms"][step.policy["chosen"]] for step in trace.steps]
    assert list(points.y[:3]) == ["1,1", "2,2,1", "3,1"]  # UCB1 plays every arm once first
    assert figure.layout.title.text == "ucb bandit: arm chosen at each step"


def test_tree_figure_title_names_arm_or_budget(code_models):
    from mambaviz.engine import RunSettings, run
    from mambaviz.search import build_policy

    bandit = bandit_trace(code_models)
    for step in bandit.steps[:3]:
        arm = step.policy["arms"][step.policy["chosen"]]
        assert f"shape {arm} (ucb arm)" in tree_figure(step).layout.title.text
    dynamic = run(code_models, "import os", RunSettings("mamba", 8), build_policy("dynamic:6"))
    assert "dynamic tree of at most 6 nodes" in tree_figure(dynamic.steps[0]).layout.title.text


def test_tree_title_marks_arm_cut_at_token_limit(code_models):
    from mambaviz.engine import RunSettings, run
    from mambaviz.search import build_policy

    trace = run(code_models, "import os", RunSettings("mamba", 4), build_policy("ucb", "1,1,1,1,1"))
    cut = next(step for step in trace.steps if 0 < len(step.shape) < 5)
    assert "(ucb arm 1,1,1,1,1, cut to fit the token limit)" in tree_figure(cut).layout.title.text


def test_target_alone_ignores_bandit_policy(code_models):
    from mambaviz.engine import RunSettings, run
    from mambaviz.search import build_policy

    policy = build_policy("ucb", "1,1;2,2")
    trace = run(code_models, "import os", RunSettings("none", 6), policy)
    assert trace.settings["tree"] == "-"
    assert all(step.policy is None for step in trace.steps)
    assert sum(policy.pulls) == 0


def test_search_table_lists_every_arm_at_the_step(code_models):
    from mambaviz.viz.search import search_table_html

    trace = bandit_trace(code_models)
    step = trace.steps[4]
    table = search_table_html(step)
    assert table.count("<tr") == 1 + 3
    assert "◀ chosen" in table
    for shape, pulls in zip(step.policy["arms"], step.policy["pulls"]):
        assert f"<td>{shape}" in table
        assert f"<td>{pulls}</td>" in table
    assert search_table_html(trace.steps[0]).count("–") >= 2  # unplayed arms have no mean or score yet


def test_search_figure_of_fixed_and_dynamic_runs(code_models):
    from mambaviz.engine import RunSettings, run
    from mambaviz.search import build_policy
    from mambaviz.viz.search import search_figure, search_table_html

    fixed = run(code_models, "import os", RunSettings("mamba", 8), build_policy("2,1"))
    assert search_figure(fixed).layout.title.text == "Tree search: this run used a fixed tree shape"
    assert search_table_html(fixed.steps[0]) == ""
    dynamic = run(code_models, "import os", RunSettings("mamba", 8), build_policy("dynamic:6"))
    figure = search_figure(dynamic)
    assert figure.layout.title.text == "Dynamic tree: nodes drafted at each step"
    assert list(figure.data[0].y) == [len(step.nodes) for step in dynamic.steps]
