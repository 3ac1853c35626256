"""The app's event handlers: run, stop, walk the steps, compare drafters, replay trace files.

Handlers read models from the shared ModelRegistry and keep per-user results in `gr.State`, whose
values they receive and return. User mistakes (a bad tree shape, a missing checkpoint, a malformed
trace) become a status line and a warning toast; the page stays usable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import gradio as gr

from mambaviz import benchmark
from mambaviz.compare import compare_runs, finish_trace
from mambaviz.engine import RunSettings, describe_settings, encode_prompt, generate
from mambaviz.errors import MambavizError
from mambaviz.sampling import SamplingConfig
from mambaviz.search import ShapeBandit, ShapePolicy, build_policy, last_bandit_decision
from mambaviz.trace import Trace
from mambaviz.ui.registry import CUSTOM, ModelRegistry, resolve_choice
from mambaviz.ui.render import (
    comparison_charts,
    comparison_table,
    explorer_view,
    greedy_check_html,
    run_status,
    step_view,
)
from mambaviz.ui.session import StopFlags, TraceFiles
from mambaviz.viz.metrics import context_figures, context_table_html
from mambaviz.viz.text import output_html

logger = logging.getLogger(__name__)

# Minimum seconds between rebuilds of the tree figure and charts while a run streams: rebuilding a
# 512-node figure every step would make the browser, not the models, the bottleneck.
TREE_RENDER_INTERVAL = 0.6
TEXT_RENDER_INTERVAL = 0.2
COMPARE_RENDER_INTERVAL = 1.0

# The app's context sweep drafts a few trees per length, and at most this many lengths and tokens,
# so one user's sweep stays under a minute on a 2-core CPU.
SWEEP_REPEATS = 4
SWEEP_MAX_LENGTHS = 6
SWEEP_MAX_TOKENS = 8192

EXPLORER_OUTPUT_COUNT = 12
COMPARE_OUTPUT_COUNT = 8


@dataclass
class RunRequest:
    """The run panel's values, in the order the layout passes them."""

    prompt: str
    preset: str
    target: str
    mamba: str
    transformer: str
    drafter: str
    tree: str
    decoding: str
    temperature: float
    top_k: float
    top_p: float
    seed: float
    max_new_tokens: float
    arms: str = ""
    reward: str = "tokens_per_second"

    def settings(self, drafter: str | None = None) -> RunSettings:
        """Validate the fields and return RunSettings, raising MambavizError on the first bad value."""
        temperature = float(self.temperature) if self.decoding == "sampling" else 0.0
        if self.decoding == "sampling" and temperature <= 0:
            raise MambavizError(f"Temperature {temperature} is invalid for sampling; use a positive number,"
                                " or choose greedy decoding.")
        sampling = SamplingConfig(temperature, whole_number(self.top_k, "Top-k"), float(self.top_p))
        return RunSettings(drafter or self.drafter, whole_number(self.max_new_tokens, "Max new tokens"), sampling,
                           whole_number(self.seed, "Seed"))

    def make_policy(self) -> ShapePolicy:
        """Build the tree-shape policy: a fixed shape, chain:K, ucb, thompson or dynamic:NODES."""
        return build_policy(self.tree or "", self.arms or None, self.reward, whole_number(self.seed, "Seed"))


def whole_number(value, name: str) -> int:
    """Return `value` as an int, raising MambavizError when it is missing or has a fraction."""
    if value is None or value == "":
        raise MambavizError(f"{name} is missing; enter a whole number.")
    number = float(value)
    if not number.is_integer():
        raise MambavizError(f"{name} {value} is invalid; it must be a whole number.")
    return int(number)


def model_request(preset, target, mamba, transformer) -> tuple[RunRequest, tuple[str, ...]]:
    """Return a request for the model fields alone, and the drafters it names (both for a preset)."""
    request = RunRequest("", preset, target, mamba, transformer, "mamba", "", "greedy", 0, 0, 1.0, 0, 1)
    drafters = tuple(name for name in ("mamba", "transformer") if getattr(request, name) or preset != CUSTOM)
    return request, drafters


def session_of(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "local"


def warn(message: str) -> str:
    """Show `message` as a warning toast and return it as a status line."""
    gr.Warning(message)
    return f"⚠️ {message}"


class Handlers:
    """Event handlers bound to the shared registry, stop flags and trace files."""

    def __init__(self, registry: ModelRegistry):
        self.registry = registry
        self.stop_flags = StopFlags()
        self.trace_files = TraceFiles()

    def _load(self, request: RunRequest, drafters: tuple[str, ...], progress):
        choice = resolve_choice(request.preset, request.target, request.mamba, request.transformer,
                                self.registry.device)
        models = self.registry.get(choice, lambda fraction, text: progress(fraction, desc=text))
        for name in drafters:
            self.registry.ensure_drafter(models, name, lambda fraction, text: progress(fraction, desc=text))
        return models

    def load_models(self, preset, target, mamba, transformer, progress=gr.Progress()) -> str:
        """Load the chosen target and both drafters now, so the first run does not wait for them."""
        request, drafters = model_request(preset, target, mamba, transformer)
        try:
            models = self._load(request, drafters, progress)
        except MambavizError as error:
            logger.info("model load rejected: %s", error)
            return warn(str(error))
        loaded = ", ".join(f"{role} `{location}`" for role, location in models.locations.items() if location)
        return f"Loaded {loaded}."

    # ----- explorer -------------------------------------------------------------------------------

    def run(self, prompt, preset, target, mamba, transformer, drafter, tree, decoding, temperature, top_k, top_p,
            seed, max_new_tokens, arms, reward, warm_start, previous: Trace | None, request: gr.Request,
            progress=gr.Progress()) -> Iterator[tuple]:
        """Run one generation, streaming the output text as steps complete and the tree every TREE_RENDER_INTERVAL.

        With `warm_start`, a bandit starts from the arm statistics at the end of `previous`, the
        page's last run.
        """
        run_request = RunRequest(prompt, preset, target, mamba, transformer, drafter, tree, decoding, temperature,
                                 top_k, top_p, seed, max_new_tokens, arms, reward)
        skip = (gr.skip(),) * (EXPLORER_OUTPUT_COUNT - 1)
        try:
            settings = run_request.settings()
            policy = run_request.make_policy()
            if warm_start and isinstance(policy, ShapeBandit):
                decision = last_bandit_decision(previous.steps) if previous is not None else None
                if decision is None:
                    raise MambavizError("There are no arm statistics to start from: the last run on this page was"
                                        " not a bandit run. Clear the option or run ucb or thompson first.")
                policy.load_statistics(decision)
            models = self._load(run_request, (settings.drafter,), progress)
            prompt_ids = encode_prompt(models, prompt)
        except MambavizError as error:
            logger.info("run rejected: %s", error)
            yield (warn(str(error)), *skip)
            return

        trace = Trace(settings=describe_settings(models, prompt, settings, policy), prompt_ids=prompt_ids)
        session = session_of(request)
        stop = self.stop_flags.start(session)
        state = "Done"
        last_text = last_tree = 0.0
        try:
            for record in generate(models, prompt_ids, settings, policy, trace):
                if stop.is_set():
                    state = f"Stopped after step {record.index + 1}"
                    break
                now = time.monotonic()
                if now - last_tree >= TREE_RENDER_INTERVAL:
                    last_tree = last_text = now
                    slider, figure, details = step_view(trace, None)
                    yield (run_status(trace, "Running"), output_html(trace), figure, slider, details,
                           *(gr.skip(),) * (EXPLORER_OUTPUT_COUNT - 5))
                elif now - last_text >= TEXT_RENDER_INTERVAL:
                    last_text = now
                    yield (run_status(trace, "Running"), output_html(trace), *(gr.skip(),) * (EXPLORER_OUTPUT_COUNT - 2))
        except MambavizError as error:
            state = warn(f"The run stopped early: {error}")
        except Exception as error:  # noqa: BLE001 - keep the page and the steps done so far on any engine failure
            logger.exception("run failed after %d steps", len(trace.steps))
            state = warn(f"The run failed after {len(trace.steps)} steps ({type(error).__name__}: {error});"
                         " the steps so far are kept")
        finally:
            self.stop_flags.finish(session, stop)

        finish_trace(models, trace)
        download = self.trace_files.write(trace, settings.drafter) if trace.steps else None
        status = run_status(trace, state) if trace.steps else f"**{state}**: no step completed."
        yield explorer_view(trace, status, download)

    def stop(self, request: gr.Request):
        """Ask this session's running generation or comparison to stop after its current step."""
        if self.stop_flags.stop(session_of(request)):
            return "**Stopping** after the current step…"
        return gr.skip()

    def show_step(self, position, trace: Trace | None) -> tuple:
        return step_view(trace, position)

    def step_by(self, delta: int):
        def move(position, trace: Trace | None) -> tuple:
            return step_view(trace, (position or 1) + delta)
        return move

    def toggle_play(self, playing: bool, position, trace: Trace | None) -> tuple:
        """Start or pause stepping through the run; starting on the last step restarts from step 1."""
        if trace is None or len(trace.steps) < 2:
            return False, gr.Timer(active=False), gr.Button(value="▶ Play"), *step_view(trace, position)
        playing = not playing
        if playing and position is not None and int(position) >= len(trace.steps):
            position = 1
        return (playing, gr.Timer(active=playing), gr.Button(value="⏸ Pause" if playing else "▶ Play"),
                *step_view(trace, position))

    def play_tick(self, position, trace: Trace | None) -> tuple:
        """Advance one step; stop playing after the last one."""
        count = len(trace.steps) if trace else 0
        next_position = (int(position) if position else 0) + 1
        if next_position > count:
            return False, gr.Timer(active=False), gr.Button(value="▶ Play"), *(gr.skip(),) * 3
        still_playing = next_position < count
        return (still_playing, gr.Timer(active=still_playing),
                gr.Button(value="⏸ Pause" if still_playing else "▶ Play"), *step_view(trace, next_position))

    def replay(self, path: str | None) -> tuple:
        """Load a trace file and draw its run, with no model needed; a bad file leaves the page as it was."""
        skip = (gr.skip(),) * (EXPLORER_OUTPUT_COUNT - 1)
        if not path:
            return (gr.skip(), *skip)
        try:
            trace = Trace.load(path)
        except MambavizError as error:
            logger.info("trace replay rejected: %s", error)
            return (warn(str(error)), *skip)
        if not trace.steps:
            return (warn("The trace has no steps, so there is nothing to replay."), *skip)
        status = run_status(trace, "Replaying a trace file")
        return explorer_view(trace, status, self.trace_files.write(trace, f"replay-{trace.settings.get('drafter')}"))

    # ----- context sweep --------------------------------------------------------------------------

    def context_sweep(self, lengths, preset, target, mamba, transformer, progress=gr.Progress()) -> tuple:
        """Time drafting and verification at each context length with the run panel's models."""
        request, drafters = model_request(preset, target, mamba, transformer)
        try:
            parsed = benchmark.parse_lengths(lengths or "", maximum=SWEEP_MAX_TOKENS)
            if len(parsed) > SWEEP_MAX_LENGTHS:
                raise MambavizError(f"{len(parsed)} context lengths are too many here; give at most"
                                    f" {SWEEP_MAX_LENGTHS}, or run python -m mambaviz bench-context.")
            models = self._load(request, drafters, progress)
        except MambavizError as error:
            logger.info("context sweep rejected: %s", error)
            return warn(str(error)), gr.skip(), gr.skip(), gr.skip()
        progress(0.5, desc=f"Measuring at {len(parsed)} context lengths")
        start = time.monotonic()
        try:
            points = benchmark.context_sweep(models, parsed, drafters=drafters, repeats=SWEEP_REPEATS)
        except Exception as error:  # noqa: BLE001 - a model may refuse long contexts; keep the page usable
            logger.exception("context sweep failed")
            return (warn(f"The sweep failed ({type(error).__name__}: {error}); try shorter context lengths."),
                    gr.skip(), gr.skip(), gr.skip())
        status = f"Measured at {len(parsed)} context lengths in {time.monotonic() - start:.0f} s."
        if models.max_context is not None and parsed[-1] > models.max_context:
            status += (f" The target was built for {models.max_context:,} positions, so beyond that these figures"
                       " time the computation, not useful predictions.")
        return (status, context_table_html(points, benchmark.growth_ratios(points)), *context_figures(points))

    # ----- compare --------------------------------------------------------------------------------

    def compare(self, prompt, preset, target, mamba, transformer, drafter, tree, decoding, temperature, top_k, top_p,
                seed, max_new_tokens, arms, reward, request: gr.Request, progress=gr.Progress()) -> Iterator[tuple]:
        """Run the prompt with the Mamba drafter, the Transformer drafter and the target alone, interleaved."""
        run_request = RunRequest(prompt, preset, target, mamba, transformer, drafter, tree, decoding, temperature,
                                 top_k, top_p, seed, max_new_tokens, arms, reward)
        skip = (gr.skip(),) * (COMPARE_OUTPUT_COUNT - 1)
        try:
            settings = run_request.settings(drafter="none")
            run_request.make_policy()
            models = self._load(run_request, ("mamba", "transformer"), progress)
            encode_prompt(models, prompt)
        except MambavizError as error:
            logger.info("comparison rejected: %s", error)
            yield (warn(str(error)), *skip)
            return

        session = session_of(request)
        stop = self.stop_flags.start(session)
        state = "Done"
        traces: dict[str, Trace] = {}
        last_render = 0.0
        runs = compare_runs(models, prompt, settings, run_request.make_policy)
        try:
            for traces in runs:
                if stop.is_set():
                    state = "Stopped"
                    break
                now = time.monotonic()
                if now - last_render >= COMPARE_RENDER_INTERVAL:
                    last_render = now
                    steps = ", ".join(f"{name} {len(trace.steps)}" for name, trace in traces.items())
                    yield (f"**Running**: steps so far: {steps}.", comparison_table(traces), gr.skip(),
                           *comparison_charts(traces), gr.skip(), gr.skip())
        except MambavizError as error:
            state = warn(f"The comparison stopped early: {error}")
        except Exception as error:  # noqa: BLE001 - keep the page and the steps done so far on any engine failure
            logger.exception("comparison failed")
            state = warn(f"The comparison failed ({type(error).__name__}: {error}); the steps so far are kept")
        finally:
            runs.close()
            self.stop_flags.finish(session, stop)

        files = [self.trace_files.write(trace, f"compare-{name}") for name, trace in traces.items() if trace.steps]
        yield self._comparison_view(traces, f"**{state}**: {comparison_summary(traces)}", files)

    def replay_comparison(self, paths: list[str] | None) -> tuple:
        """Load up to three trace files, one per drafter, and draw their comparison."""
        skip = (gr.skip(),) * (COMPARE_OUTPUT_COUNT - 1)
        if not paths:
            return (gr.skip(), *skip)
        traces: dict[str, Trace] = {}
        try:
            for path in paths:
                trace = Trace.load(path)
                name = str(trace.settings.get("drafter", f"run {len(traces) + 1}"))
                if name in traces:
                    raise MambavizError(f"Two of the traces used the {name} drafter; upload one trace per drafter.")
                traces[name] = trace
        except MambavizError as error:
            logger.info("comparison replay rejected: %s", error)
            return (warn(str(error)), *skip)
        return self._comparison_view(traces, f"**Replaying trace files**: {comparison_summary(traces)}", None)

    def _comparison_view(self, traces: dict[str, Trace], status: str, files: list[str] | None) -> tuple:
        return (status, comparison_table(traces), greedy_check_html(traces), *comparison_charts(traces),
                files if files else gr.skip(), traces)


def comparison_summary(traces: dict[str, Trace]) -> str:
    if not traces:
        return "no run completed."
    return ", ".join(f"{name} {len(trace.new_tokens)} tokens in {len(trace.steps)} steps"
                     for name, trace in traces.items()) + "."
