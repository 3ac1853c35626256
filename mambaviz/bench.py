"""`python -m mambaviz bench` and `bench-context`: reproducible benchmarks on real prompts.

`bench` runs every (drafter, tree policy) configuration on every prompt. The runs are interleaved
prompt by prompt, with the configuration order rotating, so a slow phase of a shared machine hits
all configurations alike. Speedups are per-prompt ratios against the target alone on that prompt.
`bench-context` times drafting and verification at several context lengths (see
`mambaviz.benchmark.context_sweep`). Both write `results.json`, a Markdown table and a
self-contained Plotly HTML report into `--out`. `docs/metrics.md` defines every figure.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mambaviz import benchmark, corpus
from mambaviz.cli_generate import add_model_arguments
from mambaviz.engine import RunSettings, run
from mambaviz.errors import MambavizError
from mambaviz.models import ASSETS, DRAFTER_NAMES, load_model_set
from mambaviz.sampling import SamplingConfig
from mambaviz.search import BANDITS, REWARDS, build_policy
from mambaviz.trace import summarize
from mambaviz.tree import parse_shape
from mambaviz.viz.metrics import context_figures

logger = logging.getLogger(__name__)

BUNDLED_PROMPTS = ASSETS / "prompts" / "heldout.jsonl"
CARRIED = " carried"
THIRD_PARTY_PACKAGES = ("numpy", "networkx", "tqdm", "plotly", "safetensors", "huggingface_hub", "gradio")


# Prompt sets.

def load_prompt_file(path: Path) -> list[dict[str, Any]]:
    """Read JSON Lines of `{"prompt": ...}` or Spec-Bench's `{"turns": [...], "category": ...}`.

    Spec-Bench questions are benchmarked on their first turn.
    """
    if not path.is_file():
        raise MambavizError(f"Prompt file {path} not found.")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            raise MambavizError(f"Prompt file {path} line {number} is not valid JSON.") from None
        if isinstance(entry, dict) and isinstance(entry.get("prompt"), str):
            text = entry["prompt"]
        elif isinstance(entry, dict) and isinstance(entry.get("turns"), list) and entry["turns"] \
                and isinstance(entry["turns"][0], str):
            text = entry["turns"][0]
        else:
            raise MambavizError(f"Prompt file {path} line {number} has neither a \"prompt\" string nor a"
                                " \"turns\" list of strings.")
        if not text.strip():
            raise MambavizError(f"Prompt file {path} line {number} has an empty prompt.")
        prompts.append({"prompt": text, "category": entry.get("category"), "source": entry.get("source")})
    if not prompts:
        raise MambavizError(f"Prompt file {path} contains no prompts.")
    return prompts


def read_json_file(path: Path, kind: str, producer: str) -> Any:
    """Parse the JSON file `path`, raising MambavizError, worded with `kind` and `producer`, when it cannot be read."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MambavizError(f"{kind} {path} was not found; write one with {producer}.") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MambavizError(f"{kind} {path} could not be read as JSON ({error}).") from None


def third_party_prompts(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Cut def/class-header prompts from installed third-party packages (never the standard library,
    which trained the bundled models)."""
    import importlib.util

    files = []
    for package in THIRD_PARTY_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        for path in sorted(root.rglob("*.py")):
            if "tests" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            relative = f"{package}/{path.relative_to(root).as_posix()}"
            files.append(corpus.SourceFile(relative, text, len(text), "", "heldout"))
    if not files:
        raise MambavizError("No third-party packages found to cut prompts from; pass --prompts FILE.")
    prompts = corpus.extract_prompts(files, count=count, seed=seed)
    return [{**prompt, "category": "third-party code"} for prompt in prompts]


def load_prompts(source: str, limit: int, seed: int = 0) -> list[dict[str, Any]]:
    """Return up to `limit` prompts from `bundled`, `third-party` or a JSON Lines file."""
    if limit < 1:
        raise MambavizError(f"Prompt limit {limit} is invalid; it must be a positive integer.")
    if source == "bundled":
        return load_prompt_file(BUNDLED_PROMPTS)[:limit]
    if source == "third-party":
        return third_party_prompts(limit, seed)
    return load_prompt_file(Path(source))[:limit]


# The benchmark.

def configurations(drafters: list[str], trees: list[str], carry_bandit: bool = False) -> list[tuple[str, str]]:
    """Pair each drafter with each tree policy; the target alone needs no tree and runs once.

    With `carry_bandit`, each bandit policy also runs a second time as `<policy> carried`.
    """
    configs = []
    for drafter in drafters:
        if drafter == "none":
            configs.append(("none", "-"))
            continue
        for tree in trees:
            configs.append((drafter, tree))
            if carry_bandit and tree in BANDITS:
                configs.append((drafter, tree + CARRIED))
    return configs


def run_benchmark(
    models, prompts, configs, settings: dict[str, Any], arms: str | None, reward: str, repeats: int = 1
) -> list[dict]:
    """Run every configuration on every prompt, interleaved, and return one record per run.

    The prompt list is run `repeats` times, each pass with its own seeds. A bandit configuration
    named `<policy> carried` starts each run from the arm statistics it reached on the previous run,
    as a long-running server's bandit would. Every other run starts afresh.
    """
    sampling = SamplingConfig(settings["temperature"], settings["top_k"], settings["top_p"])
    records = []
    bandit_state: dict[tuple[str, str], dict] = {}  # carried statistics per configuration
    progress = tqdm(total=repeats * len(prompts) * len(configs), desc="bench", unit="run")
    passes = [(repeat, index, entry) for repeat in range(repeats) for index, entry in enumerate(prompts)]
    for position, (repeat, index, entry) in enumerate(passes):
        rotation = position % len(configs)
        for drafter, tree in configs[rotation:] + configs[:rotation]:
            carried = tree.endswith(CARRIED)
            policy_name = "1" if tree == "-" else tree.removesuffix(CARRIED)
            policy = build_policy(policy_name, arms, reward, settings["seed"] + position)
            if carried and (drafter, tree) in bandit_state:
                policy.load_statistics(bandit_state[(drafter, tree)])
            run_settings = RunSettings(drafter, settings["max_new_tokens"], sampling, settings["seed"] + repeat)
            trace = run(models, entry["prompt"], run_settings, policy)
            figures = summarize(trace)
            if carried and trace.steps:
                bandit_state[(drafter, tree)] = trace.steps[-1].policy
            drafted = sum(len(step.nodes) for step in trace.steps)
            records.append({
                "prompt_index": index,
                "repeat": repeat,
                "category": entry.get("category"),
                "drafter": drafter,
                "tree": tree,
                "new_tokens_ids": trace.new_tokens,
                "draft_ms_per_token": 1000 * figures["draft_seconds"] / drafted if drafted else None,
                "bandit": trace.steps[-1].policy if trace.steps and trace.steps[-1].policy else None,
                **{key: value for key, value in figures.items() if key != "acceptance_rate_by_depth"},
                "acceptance_rate_by_depth": figures["acceptance_rate_by_depth"],
            })
            progress.update()
            progress.set_postfix_str(f"{drafter} {tree}: {figures['tokens_per_second']:.0f} tok/s")
    progress.close()
    return records


def summarize_runs(records: list[dict], greedy: bool = True) -> list[dict]:
    """Per configuration: medians over runs, and the speedup over the target alone on the same prompt and pass.

    Outputs are compared with the target alone's under greedy decoding only: sampled runs draw from
    their own random streams, so their texts differ even though their distribution is the target's.
    """
    baseline = {_run_key(r): r for r in records if r["drafter"] == "none"}
    groups: dict[tuple[str, str], list[dict]] = {}
    for record in records:
        groups.setdefault((record["drafter"], record["tree"]), []).append(record)

    rows = []
    for (drafter, tree), runs in groups.items():
        paired = [(r, baseline[_run_key(r)]) for r in runs if _run_key(r) in baseline]
        speedups = [r["tokens_per_second"] / alone["tokens_per_second"] for r, alone in paired]
        same_output = [r["new_tokens_ids"] == alone["new_tokens_ids"] for r, alone in paired if greedy]
        tokens = sum(r["new_tokens"] for r in runs)
        steps = sum(r["steps"] for r in runs)
        draft_ms = [r["draft_ms_per_token"] for r in runs if r["draft_ms_per_token"] is not None]
        rates = [r["acceptance_rate"] for r in runs if r["acceptance_rate"] is not None]
        rows.append({
            "drafter": drafter,
            "tree": tree,
            "runs": len(runs),
            "median_tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
            "median_speedup": statistics.median(speedups) if speedups else None,
            "mean_accepted_length": tokens / steps if steps else 0.0,
            "acceptance_rate": statistics.mean(rates) if rates else None,
            "draft_ms_per_token": statistics.median(draft_ms) if draft_ms else None,
            "drafter_cache_bytes": max(r["max_drafter_cache_bytes"] for r in runs),
            "peak_memory_bytes": max(r["peak_memory_bytes"] for r in runs),
            "same_output_as_target": all(same_output) if same_output else None,
        })
    return rows


def _run_key(record: dict) -> tuple[int, int]:
    """Return the prompt and pass of a run. Results written before repeats existed have one pass."""
    return record["prompt_index"], record.get("repeat", 0)


def bandit_verdicts(rows: list[dict]) -> list[dict]:
    """Compare each adaptive policy with the fixed shapes of the same drafter, by median tokens/s."""
    verdicts = []
    for drafter in sorted({row["drafter"] for row in rows} - {"none"}):
        fixed = [row for row in rows if row["drafter"] == drafter and is_shape(row["tree"])]
        if not fixed:
            continue
        speeds = [row["median_tokens_per_second"] for row in fixed]
        best, middle = max(speeds), statistics.median(speeds)
        for row in rows:
            if row["drafter"] == drafter and not is_shape(row["tree"]):
                speed = row["median_tokens_per_second"]
                verdicts.append({"drafter": drafter, "tree": row["tree"], "vs_best_fixed": speed / best,
                                 "vs_median_fixed": speed / middle})
    return verdicts


def is_shape(tree: str) -> bool:
    """Return whether a tree policy name is a fixed shape such as 2,2,1,1."""
    try:
        parse_shape(tree)
    except MambavizError:
        return False
    return True


# Reports.

def markdown_table(rows: list[dict]) -> str:
    header = ("| drafter | tree | tokens/s (median) | speedup (median) | mean accepted length | acceptance rate |"
              " drafting ms/token | drafter cache bytes | same output |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for row in sorted(rows, key=lambda r: (r["drafter"] != "none", r["drafter"], r["tree"])):
        lines.append("| {drafter} | {tree} | {tps:.1f} | {speedup} | {tau:.2f} | {rate} | {draft} | {cache:,} | {same} |".format(
            drafter=row["drafter"], tree=row["tree"], tps=row["median_tokens_per_second"],
            speedup=_format(row["median_speedup"], "{:.2f}×"), tau=row["mean_accepted_length"],
            rate=_format(row["acceptance_rate"], "{:.1%}"), draft=_format(row["draft_ms_per_token"], "{:.2f}"),
            cache=row["drafter_cache_bytes"], same=_format(row["same_output_as_target"], "{}")))
    return header + "\n".join(lines) + "\n"


def context_markdown(points: list[benchmark.ContextPoint], ratios: dict[str, float]) -> str:
    lines = ["| component | context | ms/token | cache bytes |", "|---|---|---|---|"]
    for point in sorted(points, key=lambda p: (p.component, p.context_length)):
        lines.append(f"| {point.component} | {point.context_length} | {point.ms_per_token:.3f} | {point.cache_bytes:,} |")
    lines.append("")
    lines.append("ms/token at the longest ÷ shortest context: " +
                 ", ".join(f"{name} {ratio:.2f}×" for name, ratio in ratios.items()))
    return "\n".join(lines) + "\n"


def _format(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def write_html(path: Path, title: str, figures: list, tables: list[str]) -> None:
    """Write a self-contained HTML page: the figures (plotly.js inlined once) and Markdown tables as text."""
    import html

    import plotly.io as pio

    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    for number, figure in enumerate(figures):
        parts.append(pio.to_html(figure, include_plotlyjs=number == 0, full_html=False))
    for table in tables:
        parts.append(f"<pre>{html.escape(table)}</pre>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")


def bench_figures(rows: list[dict]):
    import plotly.graph_objects as go

    labels = [f"{row['drafter']} {row['tree']}" for row in rows]
    speed = go.Figure(go.Bar(x=labels, y=[row["median_tokens_per_second"] for row in rows]))
    speed.update_layout(title="Median tokens/s per configuration", yaxis_title="tokens/s")
    tau = go.Figure(go.Bar(x=labels, y=[row["mean_accepted_length"] for row in rows]))
    tau.update_layout(title="Mean accepted length (committed tokens per target pass)", yaxis_title="tokens")
    return [speed, tau]


# Commands.

def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--prompts", default="bundled",
                        help="bundled (held-out prompts), third-party (code from installed packages) or a JSON Lines file")
    parser.add_argument("--limit", type=int, default=20, help="number of prompts (default 20)")
    parser.add_argument("--drafters", default="mamba,transformer,none", help="comma-separated drafters")
    parser.add_argument("--trees", default="1,1,1,1,1;3,2,2,1,1",
                        help="tree policies separated by ';': shapes, ucb, thompson or dynamic:NODES")
    parser.add_argument("--arms", help="bandit arm pool, shapes separated by ';'")
    parser.add_argument("--reward", default="tokens_per_second", choices=REWARDS, help="bandit reward")
    parser.add_argument("--carry-bandit", action="store_true",
                        help="also run each bandit as '<policy> carried', starting every prompt from the arm statistics"
                             " it reached on the previous prompt")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1,
                        help="passes over the prompts, each with its own seeds. Medians cover every run (default 1)")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="output folder")
    parser.set_defaults(run=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    drafters = [name.strip() for name in args.drafters.split(",") if name.strip()]
    unknown = [name for name in drafters if name not in DRAFTER_NAMES]
    if unknown or not drafters:
        raise MambavizError(f"Drafters {args.drafters!r} are invalid; choose from {', '.join(DRAFTER_NAMES)}.")
    trees = [tree.strip() for tree in args.trees.split(";") if tree.strip()]
    for tree in trees:
        build_policy(tree, args.arms, args.reward)  # validates before any model loads
    SamplingConfig(args.temperature, args.top_k, args.top_p)
    RunSettings("none", args.max_new_tokens, seed=args.seed)
    prompts = load_prompts(args.prompts, args.limit, args.seed)
    if args.repeats < 1:
        raise MambavizError(f"Repeats {args.repeats} is invalid; it must be a positive integer.")

    models = load_model_set(args.preset, args.target, args.mamba, args.transformer, args.device)
    settings = {"prompts": args.prompts, "limit": args.limit, "temperature": args.temperature, "top_k": args.top_k,
                "top_p": args.top_p, "seed": args.seed, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats,
                "models": models.locations, "device": str(models.device)}
    configs = configurations(drafters, trees, args.carry_bandit)
    settings["carry_bandit"] = args.carry_bandit
    records = run_benchmark(models, prompts, configs, settings, args.arms, args.reward, args.repeats)
    rows = summarize_runs(records, greedy=args.temperature == 0)
    verdicts = bandit_verdicts(rows)

    args.out.mkdir(parents=True, exist_ok=True)
    results = {"settings": settings, "summary": rows, "adaptive_vs_fixed": verdicts, "runs": records}
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    table = markdown_table(rows)
    lines = [f"{verdict['drafter']} {verdict['tree']}: {verdict['vs_best_fixed']:.3f}× the best fixed shape,"
             f" {verdict['vs_median_fixed']:.3f}× the median fixed shape" for verdict in verdicts]
    runs = f"{args.repeats} pass(es) over {len(prompts)} prompt(s), {len(records)} runs."
    (args.out / "results.md").write_text("\n".join([table, runs, *lines]) + "\n", encoding="utf-8")
    write_html(args.out / "report.html", "mambaviz benchmark", bench_figures(rows), [table])
    print(table)
    print(runs)
    print("\n".join(lines))
    return 0


def add_context_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--lengths", default="128,512,1024,2048,4096", help="context lengths in tokens")
    parser.add_argument("--tree", default="3,2,2,1,1", help="tree shape drafted at each length")
    parser.add_argument("--repeats", type=int, default=10, help="trees drafted per drafter and length")
    parser.add_argument("--out", type=Path, default=Path("bench-context"), help="output folder")
    parser.set_defaults(run=run_context)


def run_context(args: argparse.Namespace) -> int:
    lengths = benchmark.parse_lengths(args.lengths)
    if args.repeats < 1:
        raise MambavizError(f"Repeats {args.repeats} is invalid; it must be a positive integer.")
    shape = parse_shape(args.tree)

    models = load_model_set(args.preset, args.target, args.mamba, args.transformer, args.device)
    points = benchmark.context_sweep(models, lengths, shape=shape, repeats=args.repeats)
    ratios = benchmark.growth_ratios(points)

    args.out.mkdir(parents=True, exist_ok=True)
    results = {"settings": {"lengths": lengths, "tree": args.tree, "repeats": args.repeats,
                            "models": models.locations, "device": str(models.device)},
               "points": [vars(point) for point in points], "growth_ratios": ratios}
    (args.out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    table = context_markdown(points, ratios)
    (args.out / "results.md").write_text(table, encoding="utf-8")
    write_html(args.out / "report.html", "mambaviz context sweep", list(context_figures(points)), [table])
    sys.stdout.write(table)
    return 0
