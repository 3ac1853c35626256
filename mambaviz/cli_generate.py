"""`python -m mambaviz generate`: speculative decoding of one prompt from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mambaviz.engine import RunSettings, run
from mambaviz.errors import MambavizError
from mambaviz.models import DRAFTER_NAMES, PRESETS, load_model_set
from mambaviz.sampling import SamplingConfig
from mambaviz.search import REWARDS, ShapeBandit, ShapePolicy, build_policy, last_bandit_decision
from mambaviz.trace import Trace, summarize


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the model-choice options shared by the commands that load models."""
    parser.add_argument("--preset", default="bundled", help=f"model preset: {', '.join(PRESETS)} (default bundled)")
    parser.add_argument("--target", help="target model: hub id or local folder (overrides the preset's)")
    parser.add_argument("--mamba", help="Mamba drafter: hub id or local folder (overrides the preset's)")
    parser.add_argument("--transformer", help="Transformer drafter: hub id or local folder (overrides the preset's)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="the prompt text")
    prompt.add_argument("--prompt-file", type=Path, help="read the prompt from this UTF-8 text file")
    add_model_arguments(parser)
    parser.add_argument("--drafter", default="mamba", choices=DRAFTER_NAMES, help="which drafter proposes tokens")
    parser.add_argument("--tree", default="3,2,2,1,1",
                        help="tree shape (branching factors per depth, or chain:K), a bandit over shapes"
                             " (ucb or thompson), or a confidence-driven tree with a node budget (dynamic:NODES)")
    parser.add_argument("--arms", help="bandit arm pool: tree shapes separated by ';', e.g. '1,1,1,1;3,2,2,1,1'")
    parser.add_argument("--reward", default="tokens_per_second", choices=REWARDS,
                        help="bandit reward: committed tokens per second of step time, or per step")
    parser.add_argument("--bandit-state", type=Path,
                        help="start the bandit from the arm statistics at the end of this trace")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 for greedy decoding (default 0)")
    parser.add_argument("--top-k", type=int, default=0, help="keep the K most likely tokens; 0 keeps all")
    parser.add_argument("--top-p", type=float, default=1.0, help="keep the smallest set of tokens with this mass")
    parser.add_argument("--max-new-tokens", type=int, default=128, help="stop after this many new tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the drafting and acceptance samplers")
    parser.add_argument("--trace", type=Path, help="save the run's JSON trace to this file")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.add_argument("--check-lossless", action="store_true",
                        help="greedy only: also run the target alone and report whether the outputs are identical")
    parser.set_defaults(run=run_command)


def read_prompt(args: argparse.Namespace) -> str:
    if args.prompt is not None:
        return args.prompt
    try:
        return args.prompt_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MambavizError(f"Prompt file {args.prompt_file} not found.") from None
    except UnicodeDecodeError:
        raise MambavizError(f"Prompt file {args.prompt_file} is not UTF-8 text.") from None
    except IsADirectoryError:
        raise MambavizError(f"Prompt file {args.prompt_file} is a folder; pass a text file.") from None


def load_bandit_state(policy: ShapePolicy, path: Path) -> None:
    """Warm-start a bandit policy from the last bandit decision stored in a trace."""
    if not isinstance(policy, ShapeBandit):
        raise MambavizError("--bandit-state needs a bandit policy; use it with --tree ucb or --tree thompson.")
    decision = last_bandit_decision(Trace.load(path).steps)
    if decision is None:
        raise MambavizError(f"Trace {path} has no bandit statistics; pass a trace of a --tree ucb or thompson run.")
    policy.load_statistics(decision)


def run_command(args: argparse.Namespace) -> int:
    prompt = read_prompt(args)
    sampling = SamplingConfig(args.temperature, args.top_k, args.top_p)
    settings = RunSettings(args.drafter, args.max_new_tokens, sampling, args.seed)
    policy = build_policy(args.tree, args.arms, args.reward, args.seed)
    if args.arms and not isinstance(policy, ShapeBandit):
        raise MambavizError("--arms sets the pool of a bandit; use it with --tree ucb or --tree thompson.")
    if args.bandit_state:
        load_bandit_state(policy, args.bandit_state)
    if args.check_lossless and not sampling.greedy:
        raise MambavizError("--check-lossless compares greedy outputs; use it with --temperature 0.")

    models = load_model_set(args.preset, args.target, args.mamba, args.transformer, args.device)
    trace = run(models, prompt, settings, policy)
    if args.trace:
        trace.save(args.trace)

    report = {"text": trace.text, **summarize(trace), "drafter": args.drafter, "tree": policy.describe()}
    if args.check_lossless:
        baseline = run(models, prompt, RunSettings("none", args.max_new_tokens, sampling, args.seed), policy)
        report["lossless"] = baseline.new_tokens == trace.new_tokens

    if args.json:
        print(json.dumps(report))
    else:
        sys.stdout.write(trace.text + "\n")
        line = (f"[{report['new_tokens']} tokens in {report['steps']} steps, {report['tokens_per_second']:.1f} tokens/s,"
                f" mean accepted length {report['mean_accepted_length']:.2f}")
        if "lossless" in report:
            line += f", lossless: {report['lossless']}"
        print(line + "]", file=sys.stderr)
    return 0
