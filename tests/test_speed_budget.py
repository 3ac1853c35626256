"""The speed budget read from bench results: per-step phases, the free-drafting bound and the budget."""

import json

import pytest

from benchmarks import speed_budget


def bench_run(drafter, tree, tokens, steps, decode, draft, verify, other):
    return {"drafter": drafter, "tree": tree, "new_tokens": tokens, "steps": steps, "decode_seconds": decode,
            "draft_seconds": draft, "verify_seconds": verify, "other_seconds": other}


RUNS = [
    bench_run("none", "-", 100, 100, 1.0, 0.0, 0.9, 0.1),  # 10 ms per token
    bench_run("mamba", "1,1", 60, 24, 0.48, 0.12, 0.30, 0.06),
    bench_run("mamba", "1,1", 40, 16, 0.32, 0.08, 0.20, 0.04),
    bench_run("mamba", "ucb", 100, 40, 0.8, 0.2, 0.5, 0.1),
]


def test_speed_budget_splits_step_time():
    rows = speed_budget.speed_budget(RUNS, goal=1.5)
    assert [(row["drafter"], row["tree"]) for row in rows] == [("mamba", "1,1")]
    row = rows[0]
    assert row["tau"] == pytest.approx(2.5)
    assert row["draft_ms"] == pytest.approx(5.0)
    assert row["verify_ms"] == pytest.approx(12.5)
    assert row["other_ms"] == pytest.approx(2.5)
    assert row["speedup"] == pytest.approx(1.25)
    # 2.5 tokens per step at 10 ms per target token, against 15 ms per step without drafting.
    assert row["free_drafting_bound"] == pytest.approx(25 / 15)
    assert row["drafting_budget_ms"] == pytest.approx(25 / 1.5 - 15)


def test_speed_budget_command_prints_table(tmp_path, capsys):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": RUNS}))
    assert speed_budget.main([str(path), "--goal", "1.2"]) == 0
    output = capsys.readouterr().out
    assert "target alone: 10.00 ms per token" in output
    assert "budget for 1.2× (ms)" in output
    assert "1,1" in output


@pytest.mark.parametrize("content, args, message", [
    (None, [], "was not found"),
    ("{not json", [], "could not be read as JSON"),
    (json.dumps({"steps": []}), [], "is not a results file"),
    (json.dumps({"runs": RUNS[1:]}), [], "no runs of the target alone"),
    (json.dumps({"runs": [{"drafter": "none", "tree": "-"}]}), [], "is not a results file"),
    (json.dumps({"runs": RUNS[:1]}), [], "no runs with a drafter and a fixed tree shape"),
    (json.dumps({"runs": RUNS}), ["--goal", "1"], "Goal 1.0 is invalid"),
    (json.dumps({"runs": RUNS}), ["--goal", "nan"], "Goal nan is invalid"),
])
def test_speed_budget_bad_input_exits_2(tmp_path, capsys, content, args, message):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    assert speed_budget.main([str(path), *args]) == 2
    assert message in capsys.readouterr().err


def test_speed_budget_directory_exits_2(tmp_path, capsys):
    assert speed_budget.main([str(tmp_path)]) == 2
    assert "could not be read" in capsys.readouterr().err
