"""Speed budget: where a speculative step's time goes, read from a `mambaviz bench` results file.

    python -m benchmarks.speed_budget out/search-greedy/results.json --goal 1.5

For every fixed tree shape of every drafter, over all runs of the file:

- tau: committed tokens per step (the mean accepted length);
- draft, verify and other: ms per step spent drafting, verifying and on the engine's bookkeeping;
- speedup: tokens/s over all runs ÷ the target alone's, each as total tokens ÷ total step time;
- free-drafting bound: tau × T1 ÷ (verify + other), with T1 the target alone's ms per token. No
  drafter with this acceptance can beat it on this machine, however fast it drafts;
- drafting budget: tau × T1 ÷ goal − verify − other, the ms per step drafting may take for the
  speedup to reach the goal. A negative budget means acceptance alone rules the goal out.

The figures come from the runs themselves, measured side by side, so a shared machine's noise
affects them as it affects the benchmark.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from mambaviz.bench import is_shape, read_json_file
from mambaviz.errors import MambavizError, run_with_exit_status


def load_runs(path: Path) -> list[dict]:
    """Return the runs of a bench results file, raising MambavizError when it is missing or of another kind."""
    results = read_json_file(path, "Results file", "python -m mambaviz bench")
    runs = results.get("runs") if isinstance(results, dict) else None
    if not isinstance(runs, list) or not all(isinstance(run, dict) and RUN_FIELDS <= run.keys() for run in runs):
        raise MambavizError(f"{path} is not a results file written by python -m mambaviz bench.")
    return runs


SUMMED = ("new_tokens", "steps", "decode_seconds", "draft_seconds", "verify_seconds", "other_seconds")
RUN_FIELDS = {"drafter", "tree", *SUMMED}


def target_ms_per_token(runs: list[dict]) -> float:
    """Return the target alone's ms per token over all its runs, raising MambavizError when there are none."""
    alone = [run for run in runs if run["drafter"] == "none"]
    tokens = sum(run["new_tokens"] for run in alone)
    if tokens == 0:
        raise MambavizError("The results have no runs of the target alone; rerun the bench with drafter none.")
    return 1000 * sum(run["decode_seconds"] for run in alone) / tokens


def speed_budget(runs: list[dict], goal: float) -> list[dict]:
    """Return one row per drafter and fixed shape: tau, ms per step by phase, speedup, bound and budget."""
    totals: dict[tuple[str, str], dict[str, float]] = {}
    for run in runs:
        total = totals.setdefault((run["drafter"], run["tree"]), dict.fromkeys(SUMMED, 0.0))
        for key in total:
            total[key] += run[key]
    target_ms = target_ms_per_token(runs)

    rows = []
    for (drafter, tree), total in sorted(totals.items()):
        if drafter == "none" or not is_shape(tree) or total["steps"] == 0:
            continue
        steps = total["steps"]
        tau = total["new_tokens"] / steps
        draft = 1000 * total["draft_seconds"] / steps
        verify = 1000 * total["verify_seconds"] / steps
        other = 1000 * total["other_seconds"] / steps
        rows.append({
            "drafter": drafter,
            "tree": tree,
            "tau": tau,
            "draft_ms": draft,
            "verify_ms": verify,
            "other_ms": other,
            "speedup": target_ms * total["new_tokens"] / (1000 * total["decode_seconds"]),
            "free_drafting_bound": tau * target_ms / (verify + other),
            "drafting_budget_ms": tau * target_ms / goal - verify - other,
        })
    return rows


def report(args: argparse.Namespace) -> int:
    if not math.isfinite(args.goal) or args.goal <= 1:
        raise MambavizError(f"Goal {args.goal} is invalid; it must be a finite speedup above 1, such as 1.5.")
    runs = load_runs(args.results)
    rows = speed_budget(runs, args.goal)
    if not rows:
        raise MambavizError(f"{args.results} has no runs with a drafter and a fixed tree shape; rerun the bench with"
                            " --drafters mamba,none and shapes in --trees.")
    print(f"target alone: {target_ms_per_token(runs):.2f} ms per token")
    budget = f"budget for {args.goal:g}× (ms)"
    width = len(budget) + 2
    print(f"{'drafter':<12} {'tree':<12} {'tau':>5} {'draft ms':>9} {'verify ms':>10} {'other ms':>9}"
          f" {'speedup':>8} {'free-drafting bound':>20} {budget:>{width}}")
    for row in rows:
        print(f"{row['drafter']:<12} {row['tree']:<12} {row['tau']:>5.2f} {row['draft_ms']:>9.2f}"
              f" {row['verify_ms']:>10.2f} {row['other_ms']:>9.2f} {row['speedup']:>7.2f}×"
              f" {row['free_drafting_bound']:>19.2f}× {row['drafting_budget_ms']:>{width}.2f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed_budget", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="results.json written by python -m mambaviz bench")
    parser.add_argument("--goal", type=float, default=1.5, help="target speedup for the drafting budget (default 1.5)")
    parser.set_defaults(run=report)
    return run_with_exit_status(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
