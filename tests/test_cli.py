"""`python -m mambaviz generate`: JSON output, lossless check, and one clear sentence for bad input."""

import json
import shutil
import subprocess
import sys

import pytest

from mambaviz.__main__ import main
from tests.conftest import byte_level_tokenizer, save_trio, word_tokenizer

REQUIRED_KEYS = {"text", "new_tokens", "steps", "mean_accepted_length", "tokens_per_second", "draft_seconds",
                 "verify_seconds", "drafter_cache_bytes", "target_cache_bytes", "peak_memory_bytes"}


def model_args(trio):
    return ["--target", trio["target"], "--mamba", trio["mamba"], "--transformer", trio["transformer"],
            "--device", "cpu"]


def run_cli(capsys, *args):
    status = main(["generate", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.mark.parametrize("drafter", ["mamba", "transformer", "none"])
def test_generate_json_has_required_figures(code_trio, capsys, drafter):
    status, out, _ = run_cli(capsys, "--prompt", "def add(a, b):", *model_args(code_trio), "--drafter", drafter,
                             "--max-new-tokens", "12", "--json", "--check-lossless")
    assert status == 0
    report = json.loads(out)
    assert REQUIRED_KEYS <= set(report)
    assert report["new_tokens"] <= 12
    assert report["lossless"] is True


def test_generate_writes_trace_and_reads_prompt_file(code_trio, capsys, tmp_path):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("class Point:\n    def", encoding="utf-8")
    trace_path = tmp_path / "out.json"
    status, out, err = run_cli(capsys, "--prompt-file", str(prompt_file), *model_args(code_trio),
                               "--tree", "chain:4", "--temperature", "0.9", "--top-p", "0.95", "--seed", "5",
                               "--max-new-tokens", "10", "--trace", str(trace_path))
    assert status == 0
    assert "tokens/s" in err
    trace = json.loads(trace_path.read_text())
    assert trace["settings"]["tree"] == "1,1,1,1"
    assert trace["settings"]["temperature"] == 0.9
    assert sum(len(step["committed"]) for step in trace["steps"]) == 10


@pytest.fixture(scope="module")
def bad_folders(tmp_path_factory, code_trio):
    base = tmp_path_factory.mktemp("bad")
    pickle_only = base / "pickle_only"
    shutil.copytree(code_trio["target"], pickle_only)
    (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
    corrupt = base / "corrupt"
    shutil.copytree(code_trio["target"], corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    no_config = base / "no_config"
    shutil.copytree(code_trio["target"], no_config)
    (no_config / "config.json").unlink()
    other = save_trio(base / "other_tokenizer", word_tokenizer(["x", "y"]))
    return {"pickle_only": pickle_only, "corrupt": corrupt, "no_config": no_config, "other": other}


def bad_cases(code_trio, bad_folders):
    good = model_args(code_trio)
    return [
        (["--prompt", "   ", *good], "prompt is empty"),
        (["--prompt", "x " * 600, *good], "target's context is 512 tokens"),
        (["--prompt", "a", "--preset", "gpt5"], "Unknown preset 'gpt5'"),
        (["--prompt", "a", "--target", "/nonexistent/model"], "not found"),
        (["--prompt", "a", "--target", str(bad_folders["pickle_only"])], "pickle weights"),
        (["--prompt", "a", "--target", str(bad_folders["corrupt"])], "Could not load the target"),
        (["--prompt", "a", "--target", str(bad_folders["no_config"])], "no config.json"),
        (["--prompt", "a", *good, "--mamba", bad_folders["other"]["mamba"]], "different tokenizer"),
        (["--prompt", "a", *good, "--mamba", code_trio["target"]], "needs a MambaForCausalLM"),
        (["--prompt", "a", *good, "--tree", "3,0"], "at least 1"),
        (["--prompt", "a", *good, "--tree", "9,9,9"], "at most 512"),
        (["--prompt", "a", *good, "--temperature", "-0.5"], "Temperature -0.5"),
        (["--prompt", "a", *good, "--top-p", "1.5"], "Top-p 1.5"),
        (["--prompt", "a", *good, "--top-k", "-2"], "Top-k -2"),
        (["--prompt", "a", *good, "--max-new-tokens", "0"], "Max new tokens 0"),
        (["--prompt", "a", *good, "--temperature", "1", "--check-lossless"], "--check-lossless"),
        (["--prompt-file", "/nonexistent/prompt.txt", *good], "not found"),
    ]


def test_bad_input_gets_one_sentence_and_status_2(code_trio, bad_folders, capsys):
    for args, message in bad_cases(code_trio, bad_folders):
        status, out, err = run_cli(capsys, *args)
        assert status == 2, args
        assert message in err, (args, err)
        assert err.startswith("error: "), err
        assert err.count("\n") == 1, err
        assert out == ""


def test_cli_process_exits_2_without_traceback(code_trio):
    result = subprocess.run(
        [sys.executable, "-m", "mambaviz", "generate", "--prompt", "a", *model_args(code_trio), "--tree", "0"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().startswith("error: Tree shape")


def test_generate_with_bandit_and_warm_start(code_trio, capsys, tmp_path):
    trace_path = tmp_path / "ucb.json"
    status, out, _ = run_cli(capsys, "--prompt", "def add(a, b):", *model_args(code_trio), "--tree", "ucb",
                             "--arms", "1,1,1;2,2,1", "--max-new-tokens", "16", "--trace", str(trace_path), "--json")
    assert status == 0
    assert json.loads(out)["tree"] == "ucb[1,1,1;2,2,1]"
    first_pulls = json.loads(trace_path.read_text())["steps"][-1]["policy"]["pulls"]

    status, out, _ = run_cli(capsys, "--prompt", "import os", *model_args(code_trio), "--tree", "ucb",
                             "--arms", "1,1,1;2,2,1", "--max-new-tokens", "8", "--bandit-state", str(trace_path),
                             "--trace", str(tmp_path / "second.json"), "--json")
    assert status == 0
    second = json.loads((tmp_path / "second.json").read_text())
    assert sum(second["steps"][-1]["policy"]["pulls"]) == sum(first_pulls) + len(second["steps"])


def test_generate_with_dynamic_tree(code_trio, capsys):
    status, out, _ = run_cli(capsys, "--prompt", "import os", *model_args(code_trio), "--tree", "dynamic:16",
                             "--max-new-tokens", "12", "--json", "--check-lossless")
    assert status == 0
    assert json.loads(out)["lossless"] is True


def test_bandit_state_rejects_other_reward(code_trio, capsys, tmp_path):
    trace_path = tmp_path / "ucb.json"
    assert run_cli(capsys, "--prompt", "a", *model_args(code_trio), "--tree", "ucb", "--arms", "1,1;2,2",
                   "--max-new-tokens", "4", "--trace", str(trace_path))[0] == 0
    status, _, err = run_cli(capsys, "--prompt", "a", *model_args(code_trio), "--tree", "ucb", "--arms", "1,1;2,2",
                             "--reward", "tokens_per_step", "--bandit-state", str(trace_path))
    assert status == 2
    assert "measure tokens_per_second rewards, not tokens_per_step" in err


def test_bad_search_options_get_status_2(code_trio, capsys, tmp_path):
    plain_trace = tmp_path / "plain.json"
    assert run_cli(capsys, "--prompt", "a", *model_args(code_trio), "--max-new-tokens", "2",
                   "--trace", str(plain_trace))[0] == 0
    cases = [
        (["--tree", "dynamic:abc"], "dynamic:NODES"),
        (["--tree", "ucb", "--arms", "1,1;x"], "branching factors"),
        (["--tree", "3,2", "--bandit-state", str(plain_trace)], "needs a bandit policy"),
        (["--tree", "ucb", "--bandit-state", str(plain_trace)], "no bandit statistics"),
        (["--tree", "3,2", "--arms", "1,1;2,2"], "--arms sets the pool of a bandit"),
        (["--tree", "ucb", "--arms", "1,1;2,2;1,1"], "lists 1,1 more than once"),
    ]
    for extra, message in cases:
        status, out, err = run_cli(capsys, "--prompt", "a", *model_args(code_trio), *extra)
        assert status == 2, extra
        assert message in err, (extra, err)
