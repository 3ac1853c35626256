"""The app served in-process on a loopback port and driven through gradio_client: generate, stop,
compare, download and replay traces, and clear messages for bad input."""

import json
import logging
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file

from mambaviz.trace import Trace
from tests.app_server import serve

PROMPT = "def add(a, b):\n"


@pytest.fixture(scope="module")
def app_url(code_trio):
    with serve(code_trio, concurrency=2) as url:
        yield url


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


def run_inputs(trio, prompt=PROMPT, drafter="mamba", tree="3,2,2,1,1", decoding="greedy", max_new_tokens=16,
               preset="custom", temperature=0.8, top_k=0, top_p=1.0, seed=0, arms="1,1,1;2,2",
               reward="tokens_per_second"):
    """The run panel's values, as /generate (whose warm-start box stays at its default, off) and /compare take them."""
    return (prompt, preset, trio["target"], trio["mamba"], trio["transformer"], drafter, tree, decoding, temperature,
            top_k, top_p, seed, max_new_tokens, arms, reward)


def plot_json(value) -> dict:
    return json.loads(value["plot"])


def unchanged(value) -> bool:
    """Whether an output is a bare update (gr.skip()), which leaves the component as it was."""
    return isinstance(value, dict) and value.get("__type__") == "update" and "value" not in value


def downloaded_trace(value) -> Trace:
    return Trace.load(value["value"])


def test_generate_returns_text_tree_metrics_and_trace(client, code_trio):
    status, output, tree, slider, details, summary, *charts, download = client.predict(
        *run_inputs(code_trio), api_name="/generate")
    trace = downloaded_trace(download)
    assert status.startswith("**Done**")
    assert f"{len(trace.new_tokens)} tokens in {len(trace.steps)} steps" in status
    assert len(trace.new_tokens) == 16
    assert output.count("data-origin=") == 16
    assert slider["maximum"] == max(len(trace.steps), 2)
    assert plot_json(tree)["layout"]["title"]["text"].startswith(f"Step {slider['value']} of {len(trace.steps)}")
    assert "mean accepted length τ" in summary
    assert [plot_json(chart)["layout"]["title"]["text"] for chart in charts] == [
        "Time per step", "Accepted length per step", "Cache size against context length",
        "Tree search: this run used a fixed tree shape"]
    assert trace.settings["drafter"] == "mamba"


def test_generate_reports_invalid_tree_shape(client, code_trio):
    status, *rest = client.predict(*run_inputs(code_trio, tree="3,x"), api_name="/generate")
    assert "Tree shape '3,x' is invalid" in status


def test_generate_reports_missing_custom_model(client, code_trio, tmp_path):
    inputs = list(run_inputs(code_trio))
    inputs[2] = str(tmp_path / "no-such-model")
    status, *rest = client.predict(*inputs, api_name="/generate")
    assert "not found" in status
    assert "no-such-model" in status


def test_generate_sampling_uses_seed(client, code_trio):
    first = client.predict(*run_inputs(code_trio, decoding="sampling", seed=3), api_name="/generate")
    second = client.predict(*run_inputs(code_trio, decoding="sampling", seed=3), api_name="/generate")
    first_trace, second_trace = downloaded_trace(first[-1]), downloaded_trace(second[-1])
    assert first_trace.settings["temperature"] == 0.8
    assert first_trace.settings["seed"] == 3
    assert first_trace.new_tokens == second_trace.new_tokens


def test_stop_ends_run_and_keeps_steps(app_url, code_trio):
    # Wide trees make each step slow enough that the run is still going when Stop arrives.
    stopper = Client(app_url, verbose=False)
    job = stopper.submit(*run_inputs(code_trio, tree="8,8,4", max_new_tokens=400), api_name="/generate")
    deadline = time.monotonic() + 60
    while not job.outputs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert job.outputs(), "the run streamed no output within 60 s"
    assert stopper.predict(api_name="/stop").startswith("**Stopping**")

    status, output, *rest, download = job.result(timeout=120)
    trace = downloaded_trace(download)
    assert status.startswith(f"**Stopped after step {len(trace.steps)}**")
    assert 0 < len(trace.new_tokens) < 400
    assert output.count("data-origin=") == len(trace.new_tokens)


def test_compare_shows_identical_greedy_outputs(client, code_trio):
    status, table, check, accepted, progress, cache, files = client.predict(
        *run_inputs(code_trio, max_new_tokens=12), api_name="/compare")
    assert status.startswith("**Done**")
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {"Mamba drafter", "Transformer drafter", "target alone"}
    assert rows["target alone"][2] == "1.00×"
    assert 'data-check="identical"' in check
    assert len(plot_json(accepted)["data"]) == 3
    assert len(plot_json(progress)["data"]) == 3
    assert len(plot_json(cache)["data"]) == 2  # one line per drafter; the target alone keeps no drafter cache
    traces = [Trace.load(path) for path in files]
    assert {trace.settings["drafter"] for trace in traces} == {"mamba", "transformer", "none"}
    assert len({tuple(trace.new_tokens) for trace in traces}) == 1


def test_replay_comparison_from_trace_files(client, code_trio):
    *_, files = client.predict(*run_inputs(code_trio, max_new_tokens=8), api_name="/compare")
    status, table, check, *rest = client.predict([handle_file(path) for path in files],
                                                 api_name="/replay_comparison")
    assert status.startswith("**Replaying trace files**")
    assert len(table["data"]) == 3
    assert 'data-check="identical"' in check


def test_replay_draws_same_run_without_models(code_trio, client, tmp_path):
    live = client.predict(*run_inputs(code_trio, drafter="transformer", tree="chain:3"), api_name="/generate")
    replayed = client.predict(handle_file(live[-1]["value"]), api_name="/replay")
    assert replayed[0].startswith("**Replaying a trace file**")
    assert replayed[1] == live[1]  # the output text
    assert plot_json(replayed[2])["data"] == plot_json(live[2])["data"]  # the draft tree


def test_replay_works_in_app_without_models(tmp_path, code_trio, client):
    *_, download = client.predict(*run_inputs(code_trio), api_name="/generate")
    with serve({"target": str(tmp_path / "absent")}, preload=False) as url:
        status, output, *rest = Client(url, verbose=False).predict(handle_file(download["value"]), api_name="/replay")
    assert status.startswith("**Replaying a trace file**")
    assert "data-origin=" in output


@pytest.mark.parametrize("name, content, message", [
    ("broken.json", "{not json", "is not valid JSON"),
    ("old.json", json.dumps({"schema_version": 99, "settings": {}, "prompt_ids": [], "steps": []}),
     "schema version 99"),
    ("list.json", "[1, 2]", "top level must be a JSON object"),
])
def test_replay_rejects_bad_trace_and_stays_usable(client, code_trio, tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    status, *rest = client.predict(handle_file(str(path)), api_name="/replay")
    assert message in status
    assert all(unchanged(value) for value in rest)

    status, *rest = client.predict(*run_inputs(code_trio, max_new_tokens=4), api_name="/generate")
    assert status.startswith("**Done**")


def test_replay_rejects_trace_over_50_mb(client, tmp_path):
    path = tmp_path / "huge.json"
    with path.open("wb") as file:
        file.write(b'{"schema_version": 1, "pad": "')
        file.write(b"x" * (50 * 1024 * 1024 + 10))
        file.write(b'"}')
    status, *rest = client.predict(handle_file(str(path)), api_name="/replay")
    assert "traces of at most 50 MB are accepted" in status


def test_models_load_once_for_concurrent_users(app_url, code_trio, caplog):
    results = []

    def generate():
        results.append(Client(app_url, verbose=False).predict(*run_inputs(code_trio), api_name="/generate"))

    with caplog.at_level(logging.INFO, logger="mambaviz.models"):
        users = [threading.Thread(target=generate) for _ in range(2)]
        for user in users:
            user.start()
        for user in users:
            user.join(timeout=120)
    assert [result[0].startswith("**Done**") for result in results] == [True, True]
    assert [record.message for record in caplog.records if record.message.startswith("loaded")] == []
    assert downloaded_trace(results[0][-1]).new_tokens == downloaded_trace(results[1][-1]).new_tokens


def test_download_file_is_a_loadable_trace(client, code_trio):
    *_, download = client.predict(*run_inputs(code_trio, drafter="none"), api_name="/generate")
    path = Path(download["value"])
    assert path.name.startswith("mambaviz-none-")
    assert Trace.load(path).settings["drafter"] == "none"


@pytest.mark.parametrize("tree, phrase", [("ucb", "ucb bandit chose"), ("dynamic:16", "dynamic tree of at most 16 nodes")])
def test_generate_with_adaptive_policy(client, code_trio, tree, phrase):
    status, output, figure, slider, details, *rest, download = client.predict(
        *run_inputs(code_trio, tree=tree), api_name="/generate")
    assert status.startswith("**Done**")
    assert phrase in details
    search_title = plot_json(rest[-1])["layout"]["title"]["text"]
    assert search_title.startswith("ucb bandit" if tree == "ucb" else "Dynamic tree")
    assert ("mean reward (tokens_per_second)" in details) == (tree == "ucb")
    assert downloaded_trace(download).settings["tree"].startswith(tree.split(":")[0])


def test_context_sweep_draws_time_and_cache_against_length(client, code_trio):
    status, table, timing, cache = client.predict("64,32", *run_inputs(code_trio)[1:5], api_name="/context_sweep")
    assert status.startswith("Measured at 2 context lengths")
    assert "target KV cache" in table
    assert table.index("<td style=\"text-align: right; padding: 2px 10px;\">32</td>") < table.index(">64</td>")
    assert "Mamba drafter ms/token" in table
    assert "Transformer drafter cache" in table
    timing_names = {line["name"] for line in plot_json(timing)["data"]}
    assert timing_names == {"Mamba drafter", "Transformer drafter", "target verification"}
    mamba_cache = next(line for line in plot_json(cache)["data"] if line["name"] == "Mamba drafter")
    transformer_cache = next(line for line in plot_json(cache)["data"] if line["name"] == "Transformer drafter")
    assert mamba_cache["y"][0] == mamba_cache["y"][1]
    assert transformer_cache["y"][0] < transformer_cache["y"][1]


@pytest.mark.parametrize("lengths, message", [
    ("128,abc", "write whole numbers separated by commas"),
    ("1", "at least 2 tokens"),
    ("100000", "at most 8192 tokens"),
    ("10,20,30,40,50,60,70", "are too many here; give at most 6"),
    ("", "are missing; write whole numbers"),
])
def test_context_sweep_rejects_bad_lengths(client, code_trio, lengths, message):
    status, table, timing, cache = client.predict(lengths, *run_inputs(code_trio)[1:5], api_name="/context_sweep")
    assert status.startswith("⚠️")
    assert message in status
    assert unchanged(table)
    assert unchanged(timing)
    assert unchanged(cache)


def test_generate_bandit_uses_arms_and_warm_start(client, code_trio):
    *_, first = client.predict(*run_inputs(code_trio, tree="ucb", reward="tokens_per_step"), api_name="/generate")
    first_trace = downloaded_trace(first)
    decision = first_trace.steps[-1].policy
    assert decision["arms"] == ["1,1,1", "2,2"]
    assert decision["reward"] == "tokens_per_step"

    *_, second = client.predict(*run_inputs(code_trio, tree="ucb", reward="tokens_per_step"), True,
                                api_name="/generate")
    second_trace = downloaded_trace(second)
    first_pulls = sum(decision["pulls"])
    # A step records the statistics after its own pull.
    assert sum(second_trace.steps[0].policy["pulls"]) == first_pulls + 1
    assert sum(second_trace.steps[-1].policy["pulls"]) == first_pulls + len(second_trace.steps)


def test_generate_warm_start_needs_previous_bandit_run(client, code_trio):
    client.predict(*run_inputs(code_trio, tree="chain:3"), api_name="/generate")
    status, *rest = client.predict(*run_inputs(code_trio, tree="ucb"), True, api_name="/generate")
    assert status.startswith("⚠️ There are no arm statistics to start from: the last run on this page")
    assert all(unchanged(value) for value in rest)


def test_generate_rejects_invalid_arm_pool(client, code_trio):
    status, *rest = client.predict(*run_inputs(code_trio, tree="ucb", arms="1,1;0"), api_name="/generate")
    assert status.startswith("⚠️")
    assert "Tree shape 0 is invalid" in status
    assert all(unchanged(value) for value in rest)
