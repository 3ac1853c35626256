"""Bandit replay: tune the UCB1 exploration constant on recorded steps instead of live runs.

    python -m benchmarks.bandit_replay record --preset bundled --limit 20 --out out/steps.json
    python -m benchmarks.bandit_replay replay out/steps.json --exploration 1,0.5,0.25

`record` decodes every prompt once with each arm of the pool as a fixed shape. It saves every step's
committed tokens and step seconds, and the sibling ranks of the accepted nodes, from which the
bandit learns what smaller arms would have committed. `replay` feeds those steps to the bandit: when
it picks an arm after `g` generated tokens, it receives a random step of the arm's own run from
within 16 tokens of that point of the text. A replayed run costs microseconds, so many exploration
constants and seeds can be compared on the same recorded outcomes. Each replayed step time is
multiplied by log-normal noise (sigma 0.1) drawn from the seed, as a shared machine jitters by about
that much. The report gives the bandit's median tokens/s over prompts ÷ the best and ÷ the median
fixed arm, each arm replayed alone, with fresh statistics per prompt and with statistics carried
from prompt to prompt.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
from pathlib import Path

from tqdm import tqdm

from mambaviz.bench import load_prompts, read_json_file
from mambaviz.cli_generate import add_model_arguments
from mambaviz.engine import RunSettings, encode_prompt, generate
from mambaviz.errors import MambavizError, run_with_exit_status
from mambaviz.models import load_model_set
from mambaviz.sampling import SamplingConfig
from mambaviz.search import BANDITS, DEFAULT_ARMS, UCB_EXPLORATION, FixedShape, ShapeBandit, parse_arms
from mambaviz.tree import format_shape, parse_shape

TIME_NOISE_SIGMA = 0.1
STEP_WINDOW = 16  # tokens


class RecordedShape(FixedShape):
    """A fixed shape that keeps the accepted sibling ranks the engine reports after each step."""

    uses_accepted_ranks = True

    def __init__(self, shape: tuple[int, ...]):
        super().__init__(shape)
        self.ranks: list[list[int] | None] = []

    def observe(self, plan, committed: int, seconds: float, accepted_ranks: list[int] | None = None) -> None:
        self.ranks.append(accepted_ranks)


def record(args: argparse.Namespace) -> int:
    """Decode each prompt with each arm as a fixed shape and save every step's tokens, seconds and ranks."""
    arms = parse_arms(args.arms) if args.arms else DEFAULT_ARMS
    sampling = SamplingConfig(args.temperature)
    RunSettings(args.drafter, args.max_new_tokens)  # validates both before any model loads
    if args.drafter == "none":
        raise MambavizError("The target alone drafts no tree, so it has no arms to record; choose mamba or transformer.")
    prompts = load_prompts(args.prompts, args.limit)
    models = load_model_set(args.preset, args.target, args.mamba, args.transformer, args.device)
    steps: dict[str, list[list[tuple]]] = {format_shape(arm): [] for arm in arms}
    for index, prompt in enumerate(tqdm(prompts, desc="record", unit="prompt")):
        prompt_ids = encode_prompt(models, prompt["prompt"])
        settings = RunSettings(args.drafter, args.max_new_tokens, sampling, seed=index)
        for arm in arms:
            policy = RecordedShape(arm)
            records = list(generate(models, prompt_ids, settings, policy))
            # The engine reports ranks for uncut steps only, and None for a step cut at the token limit.
            run = [(len(step.committed), step.step_seconds, ranks) for step, ranks in zip(records, policy.ranks)]
            steps[format_shape(arm)].append(run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    settings = {"drafter": args.drafter, "temperature": args.temperature, "max_new_tokens": args.max_new_tokens,
                "prompts": args.prompts, "models": models.locations}
    args.out.write_text(json.dumps({"settings": settings, "steps": steps}), encoding="utf-8")
    print(f"saved the steps of {len(arms)} arms on {len(prompts)} prompts to {args.out}")
    return 0


def replay_run(steps: dict[str, list[list]], bandit: ShapeBandit, tokens: int, rng: random.Random) -> float:
    """Replay one prompt through `bandit`; return its tokens per second."""
    generated, seconds = 0, 0.0
    while generated < tokens:
        plan = bandit.next_plan()
        committed, step_seconds, *rest = _step_at(steps[format_shape(bandit.arms[bandit.chosen])], generated, rng)
        ranks = rest[0] if rest else None
        if committed > tokens - generated:
            committed, ranks = tokens - generated, None
        step_seconds *= rng.lognormvariate(0.0, TIME_NOISE_SIGMA)
        bandit.observe(plan, committed, step_seconds, ranks)
        generated += committed
        seconds += step_seconds
    return generated / seconds


def _step_at(run: list[list], generated: int, rng: random.Random) -> list:
    """Return a random step of `run` among those that began within STEP_WINDOW tokens of `generated`.

    Drawing among nearby steps, rather than taking the one step at that point, gives a replayed
    bandit the step-to-step variation of a live run while keeping how easy each part of the text is.
    """
    nearby, done = [], 0
    for step in run:
        if abs(done - generated) <= STEP_WINDOW:
            nearby.append(step)
        done += step[0]
    return rng.choice(nearby) if nearby else run[-1]


def replay_medians(steps: dict[str, list], algorithm: str, exploration: float, carry: bool, seeds: int,
                   tokens: int) -> list[float]:
    """Return, per seed, the bandit's median tokens/s over the recorded prompts."""
    arms = tuple(parse_shape(arm) for arm in steps)
    prompts = len(next(iter(steps.values())))
    medians = []
    for seed in range(seeds):
        rng = random.Random(seed)
        speeds, state = [], None
        for index in range(prompts):
            bandit = ShapeBandit(arms, algorithm, seed=seed * 1000 + index, exploration=exploration)
            if carry and state is not None:
                bandit.load_statistics(state)
            runs = {arm: runs[index] for arm, runs in steps.items()}
            speeds.append(replay_run(runs, bandit, tokens, rng))
            state = bandit.decision()
        medians.append(statistics.median(speeds))
    return medians


def load_steps(path: Path) -> dict:
    """Read a file written by `record`, raising MambavizError when it is missing or of another kind."""
    recorded = read_json_file(path, "Steps file", "the record command")
    steps = recorded.get("steps") if isinstance(recorded, dict) else None
    valid = isinstance(steps, dict) and steps and all(
        isinstance(runs, list) and runs and all(isinstance(run, list) and run for run in runs)
        for runs in steps.values())
    if not valid or not isinstance(recorded.get("settings", {}).get("max_new_tokens"), int):
        raise MambavizError(f"{path} is not a steps file written by the record command.")
    if len({len(runs) for runs in steps.values()}) != 1:
        raise MambavizError(f"{path} has a different number of prompts per arm; record all arms in one run.")
    return recorded


def parse_replay_options(args: argparse.Namespace) -> tuple[list[str], list[float]]:
    """Return the algorithms and exploration constants to replay, checked before any output."""
    algorithms = [name.strip() for name in args.algorithms.split(",") if name.strip()]
    unknown = [name for name in algorithms if name not in BANDITS]
    if unknown or not algorithms:
        raise MambavizError(f"Algorithms {args.algorithms!r} are invalid; choose from {', '.join(BANDITS)}.")
    try:
        constants = [float(value) for value in args.exploration.split(",") if value.strip()]
    except ValueError:
        raise MambavizError(f"Exploration {args.exploration!r} is invalid; write numbers separated by commas.") from None
    if not constants or any(value < 0 for value in constants):
        raise MambavizError(f"Exploration {args.exploration!r} is invalid; give constants of 0 or more.")
    if args.seeds < 1:
        raise MambavizError(f"Seeds {args.seeds} is invalid; replay with at least 1 seed.")
    return algorithms, constants


def replay(args: argparse.Namespace) -> int:
    algorithms, exploration_constants = parse_replay_options(args)
    recorded = load_steps(args.steps)
    steps = recorded["steps"]
    if args.arms:
        missing = [format_shape(arm) for arm in parse_arms(args.arms) if format_shape(arm) not in steps]
        if missing:
            raise MambavizError(f"Arms {', '.join(missing)} were not recorded in {args.steps}; record them first.")
        steps = {format_shape(arm): steps[format_shape(arm)] for arm in parse_arms(args.arms)}
    tokens = recorded["settings"]["max_new_tokens"]

    # Each fixed arm is replayed alone in the same way, so drawing nearby steps affects both sides alike.
    fixed = {arm: statistics.mean(replay_medians({arm: runs}, "ucb", UCB_EXPLORATION, False, args.seeds, tokens))
             for arm, runs in steps.items()}
    best, median = max(fixed.values()), statistics.median(fixed.values())
    print("fixed arms, median tokens/s replayed: " + ", ".join(f"{arm} {speed:.1f}" for arm, speed in fixed.items()))
    print(f"{'algorithm':<9} {'c':>5} {'statistics':<10} {'÷ best':>7} {'÷ median':>9} {'worst seed ÷ best':>18}")

    for algorithm in algorithms:
        # Thompson sampling has no exploration constant, so it runs once.
        constants = exploration_constants if algorithm == "ucb" else [UCB_EXPLORATION]
        for exploration in constants:
            for carry in (False, True):
                medians = replay_medians(steps, algorithm, exploration, carry, args.seeds, tokens)
                constant_text = f"{exploration:.2f}" if algorithm == "ucb" else "-"
                label = "carried" if carry else "fresh"
                print(f"{algorithm:<9} {constant_text:>5} {label:<10} {statistics.mean(medians) / best:>7.3f}"
                      f" {statistics.mean(medians) / median:>9.3f} {min(medians) / best:>18.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    record_parser = commands.add_parser("record", help="record every arm's steps on the prompts")
    add_model_arguments(record_parser)
    record_parser.add_argument("--prompts", default="bundled", help="bundled, third-party or a JSON Lines file")
    record_parser.add_argument("--limit", type=int, default=20, help="number of prompts (default 20)")
    record_parser.add_argument("--drafter", default="mamba", help="drafter whose steps are recorded")
    record_parser.add_argument("--arms", help="arm pool, shapes separated by ';' (default: the bandit's pool)")
    record_parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy decoding")
    record_parser.add_argument("--max-new-tokens", type=int, default=128, help="tokens per prompt (default 128)")
    record_parser.add_argument("--out", type=Path, default=Path("bandit-steps.json"), help="output JSON file")
    record_parser.set_defaults(run=record)
    replay_parser = commands.add_parser("replay", help="replay recorded steps through the bandits")
    replay_parser.add_argument("steps", type=Path, help="a file written by the record command")
    replay_parser.add_argument("--arms", help="replay only these recorded arms, shapes separated by ';'")
    replay_parser.add_argument("--exploration", default="1,0.5,0.25",
                               help="UCB1 exploration constants, comma-separated (default 1,0.5,0.25)")
    replay_parser.add_argument("--algorithms", default="ucb,thompson", help="bandit algorithms, comma-separated")
    replay_parser.add_argument("--seeds", type=int, default=10,
                               help="replays per setting, each with its own noise (default 10)")
    replay_parser.set_defaults(run=replay)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    return run_with_exit_status(args)


if __name__ == "__main__":
    sys.exit(main())
