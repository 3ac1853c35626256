"""The benchmark harness on tiny models: prompt files, interleaving, result schema and reports."""

import json

import pytest

from mambaviz import bench
from mambaviz.__main__ import main
from mambaviz.errors import MambavizError


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prompt_file_reads_prompts_and_spec_bench_turns(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [
        json.dumps({"prompt": "def f(x):"}),
        "",
        json.dumps({"question_id": 81, "category": "writing", "turns": ["Write a haiku.", "Now shorter."]}),
    ])
    prompts = bench.load_prompt_file(path)
    assert [p["prompt"] for p in prompts] == ["def f(x):", "Write a haiku."]
    assert prompts[1]["category"] == "writing"


@pytest.mark.parametrize("lines, message", [
    (["{not json"], "line 1 is not valid JSON"),
    ([json.dumps({"text": "x"})], "neither a \"prompt\""),
    ([json.dumps({"prompt": "  "})], "empty prompt"),
    ([json.dumps({"turns": []})], "neither"),
    ([""], "contains no prompts"),
])
def test_bad_prompt_files_are_rejected(tmp_path, lines, message):
    with pytest.raises(MambavizError, match=message):
        bench.load_prompt_file(write_lines(tmp_path / "bad.jsonl", lines))


def test_missing_prompt_file_is_rejected(tmp_path):
    with pytest.raises(MambavizError, match="not found"):
        bench.load_prompts(str(tmp_path / "absent.jsonl"), 5)


def test_third_party_prompts_come_from_installed_packages():
    prompts = bench.third_party_prompts(12, seed=1)
    assert len(prompts) == 12
    assert all(p["source"].split("/")[0] in bench.THIRD_PARTY_PACKAGES for p in prompts)
    assert all(p["prompt"].rstrip().endswith(":") for p in prompts)


def test_configurations_run_the_target_alone_once():
    configs = bench.configurations(["mamba", "none", "transformer"], ["1,1", "ucb"])
    assert configs == [("mamba", "1,1"), ("mamba", "ucb"), ("none", "-"), ("transformer", "1,1"),
                       ("transformer", "ucb")]


def test_summary_compares_outputs_only_when_greedy():
    def record(drafter, tokens):
        return {"prompt_index": 0, "drafter": drafter, "tree": "-" if drafter == "none" else "1,1",
                "tokens_per_second": 10.0, "new_tokens_ids": tokens, "new_tokens": 2, "steps": 1,
                "draft_ms_per_token": None, "acceptance_rate": None, "max_drafter_cache_bytes": 0,
                "peak_memory_bytes": 0}

    records = [record("none", [1, 2]), record("mamba", [1, 3])]
    greedy = {row["drafter"]: row for row in bench.summarize_runs(records)}
    sampled = {row["drafter"]: row for row in bench.summarize_runs(records, greedy=False)}
    assert greedy["mamba"]["same_output_as_target"] is False
    assert sampled["mamba"]["same_output_as_target"] is None


def test_configurations_add_carried_bandits():
    configs = bench.configurations(["mamba"], ["1,1", "ucb", "thompson", "dynamic:8"], carry_bandit=True)
    assert configs == [("mamba", "1,1"), ("mamba", "ucb"), ("mamba", "ucb carried"), ("mamba", "thompson"),
                       ("mamba", "thompson carried"), ("mamba", "dynamic:8")]


def test_bench_command_writes_results_and_reports(code_trio, tmp_path, capsys):
    prompts = write_lines(tmp_path / "prompts.jsonl", [json.dumps({"prompt": text}) for text in
                                                        ["def add(a, b):", "class Point:", "import os"]])
    out = tmp_path / "out"
    status = main(["bench", "--target", code_trio["target"], "--mamba", code_trio["mamba"], "--transformer",
                   code_trio["transformer"], "--device", "cpu", "--prompts", str(prompts), "--limit", "3",
                   "--trees", "1,1,1;2,2;ucb", "--arms", "1,1,1;2,2", "--max-new-tokens", "10", "--carry-bandit",
                   "--repeats", "2", "--out", str(out)])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    # Two passes over three prompts. Per drafter: two fixed shapes, ucb and ucb carried, plus the target alone once.
    assert len(results["runs"]) == 2 * 3 * (2 * 4 + 1)
    # Interleaved: runs go prompt by prompt, every configuration on one prompt before the next prompt.
    assert [run["prompt_index"] for run in results["runs"]] == ([0] * 9 + [1] * 9 + [2] * 9) * 2
    assert [run["repeat"] for run in results["runs"]] == [0] * 27 + [1] * 27
    assert {row["runs"] for row in results["summary"]} == {6}
    assert results["runs"][0]["drafter"] != results["runs"][9]["drafter"] or \
        results["runs"][0]["tree"] != results["runs"][9]["tree"]

    def mamba_runs(tree):
        return [run for run in results["runs"] if run["tree"] == tree and run["drafter"] == "mamba"]

    carried_pulls = [sum(run["bandit"]["pulls"]) for run in mamba_runs("ucb carried")]
    assert carried_pulls == sorted(carried_pulls)
    assert carried_pulls[-1] == sum(run["steps"] for run in mamba_runs("ucb carried"))
    fresh_pulls = [sum(run["bandit"]["pulls"]) for run in mamba_runs("ucb")]
    assert fresh_pulls == [run["steps"] for run in mamba_runs("ucb")]
    summary = {(row["drafter"], row["tree"]): row for row in results["summary"]}
    assert summary[("none", "-")]["median_speedup"] == pytest.approx(1.0)
    assert all(row["same_output_as_target"] for row in results["summary"])
    assert {v["tree"] for v in results["adaptive_vs_fixed"]} == {"ucb", "ucb carried"}
    markdown = (out / "results.md").read_text()
    assert markdown.startswith("| drafter | tree |")
    assert "2 pass(es) over 3 prompt(s), 54 runs." in markdown
    assert "the best fixed shape" in markdown
    html = (out / "report.html").read_text()
    assert "plotly" in html
    assert "Median tokens" in html
    assert "Mean accepted length" in html
    assert "the best fixed shape" in capsys.readouterr().out


def test_bench_context_command_writes_results(code_trio, tmp_path):
    out = tmp_path / "context"
    status = main(["bench-context", "--target", code_trio["target"], "--mamba", code_trio["mamba"],
                   "--transformer", code_trio["transformer"], "--device", "cpu", "--lengths", "16,64",
                   "--repeats", "2", "--out", str(out)])
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    points = {(p["component"], p["context_length"]): p for p in results["points"]}
    assert set(points) == {(c, n) for c in ("mamba", "transformer", "target") for n in (16, 64)}
    assert points[("mamba", 16)]["cache_bytes"] == points[("mamba", 64)]["cache_bytes"]
    assert points[("transformer", 64)]["cache_bytes"] > points[("transformer", 16)]["cache_bytes"]
    assert set(results["growth_ratios"]) == {"mamba", "transformer", "target"}
    assert (out / "report.html").stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["bench", "--drafters", "mamba,gpt"], "Drafters"),
    (["bench", "--trees", "3,0"], "at least 1"),
    (["bench", "--prompts", "/nonexistent.jsonl"], "not found"),
    (["bench", "--limit", "0"], "Prompt limit 0"),
    (["bench", "--repeats", "0"], "Repeats 0"),
    (["bench-context", "--lengths", "a,b"], "Lengths"),
    (["bench-context", "--lengths", "1"], "at least 2"),
])
def test_bench_bad_options_exit_2(args, message, capsys):
    assert main(args) == 2
    assert message in capsys.readouterr().err
