"""The bandit replay benchmark on synthetic recorded steps: no model runs."""

import json

import pytest

from benchmarks import bandit_replay


def recorded_steps(prompts=4, tokens=60) -> dict[str, list]:
    # Arm 2,2 commits 3 tokens per 10 ms step, arm 1,1 commits 2: arm 2,2 is 1.5 times as fast.
    return {
        "1,1": [[(2, 0.01)] * (tokens // 2) for _ in range(prompts)],
        "2,2": [[(3, 0.01)] * (tokens // 3) for _ in range(prompts)],
    }


def test_replay_run_reaches_token_count():
    steps = recorded_steps()
    bandit = bandit_replay.ShapeBandit(((1, 1), (2, 2)))
    speed = bandit_replay.replay_run({arm: runs[0] for arm, runs in steps.items()}, bandit, 60,
                                     bandit_replay.random.Random(0))
    assert 200 < speed < 300
    assert bandit.pulls[1] > bandit.pulls[0]


def test_replay_medians_approach_best_arm():
    medians = bandit_replay.replay_medians(recorded_steps(), "ucb", 0.2, carry=True, seeds=3, tokens=60)
    assert len(medians) == 3
    assert min(medians) > 0.9 * 300


def test_replay_command_prints_table(tmp_path, capsys):
    path = tmp_path / "steps.json"
    path.write_text(json.dumps({"settings": {"max_new_tokens": 60}, "steps": recorded_steps()}))
    assert bandit_replay.main(["replay", str(path), "--exploration", "1,0.2", "--seeds", "2"]) == 0
    output = capsys.readouterr().out
    # Replayed step times carry about 10% noise around the recorded 200 and 300 tokens/s.
    first_line = output.splitlines()[0]
    speeds = dict(item.rsplit(" ", 1) for item in first_line.split(": ")[1].split(", "))
    assert float(speeds["1,1"]) == pytest.approx(200, rel=0.1)
    assert float(speeds["2,2"]) == pytest.approx(300, rel=0.1)
    assert output.count("ucb ") == 4
    assert output.count("thompson ") == 2


@pytest.mark.parametrize("options, message", [
    (["--arms", "9,9"], "were not recorded"),
    (["--arms", "1,0"], "at least 1"),
    (["--exploration", "abc"], "write numbers separated by commas"),
    (["--exploration", "-1"], "constants of 0 or more"),
    (["--seeds", "0"], "at least 1 seed"),
    (["--algorithms", "foo"], "choose from ucb, thompson"),
])
def test_replay_command_rejects_bad_options(tmp_path, capsys, options, message):
    path = tmp_path / "steps.json"
    path.write_text(json.dumps({"settings": {"max_new_tokens": 60}, "steps": recorded_steps()}))
    assert bandit_replay.main(["replay", str(path), *options]) == 2
    output = capsys.readouterr()
    assert message in output.err
    assert output.out == ""


@pytest.mark.parametrize("content, message", [
    (None, "was not found"),
    ("{not json", "could not be read as JSON"),
    (json.dumps({"settings": {}, "prompt_ids": [1], "steps": [{"index": 0}]}), "not a steps file"),
])
def test_replay_command_rejects_other_files(tmp_path, capsys, content, message):
    path = tmp_path / "steps.json"
    if content is not None:
        path.write_text(content)
    assert bandit_replay.main(["replay", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_record_then_replay_tiny_models(code_trio, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "def add(a, b):"}) + "\n")
    out = tmp_path / "steps.json"
    status = bandit_replay.main([
        "record", "--target", code_trio["target"], "--mamba", code_trio["mamba"], "--transformer",
        code_trio["transformer"], "--device", "cpu", "--prompts", str(prompts), "--limit", "1",
        "--arms", "1,1;2,2", "--max-new-tokens", "12", "--out", str(out)])
    assert status == 0
    steps = json.loads(out.read_text())["steps"]
    assert set(steps) == {"1,1", "2,2"}
    for run in (steps["1,1"][0], steps["2,2"][0]):
        assert sum(step[0] for step in run) == 12
        # Steps carry their accepted sibling ranks, except the last one, cut at the token limit.
        assert all(isinstance(step[2], list) for step in run[:-1])
    assert bandit_replay.main(["replay", str(out), "--seeds", "1"]) == 0
    assert "fixed arms, median tokens/s replayed" in capsys.readouterr().out


def test_record_rejects_target_alone(capsys):
    assert bandit_replay.main(["record", "--drafter", "none"]) == 2
    assert "The target alone drafts no tree" in capsys.readouterr().err
