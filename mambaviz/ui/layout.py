"""The app's page: the run panel on the left, the draft trees, metrics and comparison on the right.

`build_app` lays out the components and wires the events to `Handlers`. Models are shared through
one ModelRegistry per app; everything a user produces lives in that user's `gr.State`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import gradio as gr

from mambaviz.errors import MambavizError
from mambaviz.models import ASSETS
from mambaviz.benchmark import SWEEP_SHAPE
from mambaviz.search import BANDITS, DEFAULT_ARMS
from mambaviz.tree import format_shape
from mambaviz.ui.handlers import SWEEP_MAX_LENGTHS, SWEEP_MAX_TOKENS, Handlers
from mambaviz.ui.prompts import example_prompts
from mambaviz.ui.registry import CUSTOM, ModelChoice, ModelRegistry, resolve_choice

logger = logging.getLogger(__name__)

SHAPE_CHOICES = ["3,2,2,1,1", "3,3,2,1", "2,2,2,1,1,1", "4,2,1,1,1", "chain:1", "chain:3", "chain:5", "chain:8",
                 "ucb", "thompson", "dynamic:32", "dynamic:64"]
PRESET_CHOICES = ["bundled", "pythia", CUSTOM]
PLAY_INTERVAL_SECONDS = 0.8

CSS = """
#mambaviz-header p { margin: 0.1em 0; }
#mambaviz-status p { margin: 0.2em 0; }
"""


@dataclass
class AppConfig:
    """Start-up models and run limits of the app.

    `preset` None with explicit locations starts on custom models. `concurrency` bounds the
    generations and comparisons running at once across all users; further requests wait in the queue.
    """

    preset: str | None = "bundled"
    target: str | None = None
    mamba: str | None = None
    transformer: str | None = None
    device: str = "auto"
    preload: bool = True
    concurrency: int = 1
    registry_capacity: int = 2

    def start_choice(self) -> tuple[str, ModelChoice]:
        """Return the preset name shown in the run panel and the models it stands for."""
        preset = self.preset if self.preset and not (self.target or self.mamba or self.transformer) else CUSTOM
        if preset == CUSTOM:
            return preset, resolve_choice(CUSTOM, self.target, self.mamba, self.transformer, self.device)
        return preset, resolve_choice(preset, None, None, None, self.device)


def zero_gpu(function):
    """Wrap `function` with `spaces.GPU` when the `spaces` package (Hugging Face ZeroGPU) is importable.

    Outside ZeroGPU Spaces, `spaces.GPU` leaves the function as it is.
    """
    try:
        import spaces
    except ImportError:
        return function
    # NOTE: the ZeroGPU path is untested here: no ZeroGPU hardware was available when it was written.
    return spaces.GPU(function)


def short_location(location: str | None) -> str:
    """Show bundled model folders relative to the repository and everything else as given."""
    if not location:
        return "none"
    root = ASSETS.parent
    if location.startswith(str(root)):
        return location[len(str(root)):].lstrip("/")
    return location


def preload(registry: ModelRegistry, choice: ModelChoice) -> str:
    """Load the start models, drafters included, and return the header's second line."""
    try:
        models = registry.get(choice)
        for name in ("mamba", "transformer"):
            if models.locations.get(name):
                registry.ensure_drafter(models, name)
    except MambavizError as error:
        logger.warning("start models not loaded: %s", error)
        return (f"No models loaded yet: {error} Choose models under *Models* in the run panel, or replay a trace"
                " file.")
    device = f"{models.device.type}, {str(models.dtype).removeprefix('torch.')}"
    return (f"Loaded: target `{short_location(choice.target)}`, Mamba drafter `{short_location(choice.mamba)}`,"
            f" Transformer drafter `{short_location(choice.transformer)}` ({device}).")


def build_app(config: AppConfig | None = None) -> gr.Blocks:
    """Build the Gradio Blocks of the app; launch it with `mambaviz.ui.launch`."""
    config = config or AppConfig()
    registry = ModelRegistry(config.device, config.registry_capacity)
    handlers = Handlers(registry)
    start_preset, start_choice = config.start_choice()
    models_line = preload(registry, start_choice) if config.preload else (
        f"Models load on first use: target `{short_location(start_choice.target)}`.")
    prompts = example_prompts()

    with gr.Blocks(title="mambaviz: speculative decoding with a Mamba drafter", analytics_enabled=False,
                   delete_cache=(1800, 3600)) as demo:
        gr.Markdown(
            "**mambaviz** shows speculative decoding step by step: a **Mamba drafter** drafts a tree of tokens and"
            " a **Transformer target** verifies the whole tree in one forward pass, timed against a Transformer"
            " drafter and the target alone.\n\n" + models_line,
            elem_id="mambaviz-header",
        )
        trace_state = gr.State(None)
        compare_state = gr.State(None)
        playing = gr.State(False)
        play_timer = gr.Timer(PLAY_INTERVAL_SECONDS, active=False)

        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                run_inputs, warm_start, run_button, stop_button, model_fields = _run_panel(
                    prompts, start_preset, start_choice)
            with gr.Column(scale=3):
                status = gr.Markdown("Enter a prompt and press **Generate**.", elem_id="mambaviz-status")
                with gr.Row():
                    download_button = gr.DownloadButton("Download trace (JSON)", interactive=False, size="sm",
                                                        elem_id="download-trace")
                    upload_button = gr.UploadButton("Replay a trace file", file_types=[".json"], size="sm",
                                                    elem_id="replay-trace")
                with gr.Tabs():
                    with gr.Tab("Draft trees", id="explorer"):
                        output = gr.HTML(elem_id="output-text")
                        with gr.Row(equal_height=True):
                            previous_button = gr.Button("◀ Previous", size="sm", min_width=90, scale=0)
                            play_button = gr.Button("▶ Play", size="sm", min_width=90, scale=0, elem_id="play")
                            next_button = gr.Button("Next ▶", size="sm", min_width=90, scale=0)
                            step_slider = gr.Slider(1, 2, value=1, step=1, label="Step", interactive=False,
                                                    elem_id="step-slider", scale=4)
                        tree_plot = gr.Plot(label="Draft tree", elem_id="tree-plot")
                        step_details = gr.HTML(elem_id="step-details")
                    with gr.Tab("Metrics", id="metrics"):
                        summary = gr.HTML(elem_id="summary")
                        time_plot = gr.Plot(label="Time per step")
                        accepted_plot = gr.Plot(label="Accepted length per step")
                        cache_plot = gr.Plot(label="Cache size")
                        sweep_parts = _context_sweep_panel()
                    with gr.Tab("Search", id="search"):
                        search_plot = gr.Plot(label="Tree search", elem_id="search-plot")
                        gr.Markdown("The table of every arm's pulls, mean reward and score at the selected step is in"
                                    " the step details under the draft tree.")
                    with gr.Tab("Compare", id="compare"):
                        compare_parts = _compare_tab()

        explorer_outputs = [status, output, tree_plot, step_slider, step_details, summary, time_plot, accepted_plot,
                            cache_plot, search_plot, download_button, trace_state]
        step_outputs = [step_slider, tree_plot, step_details]
        compare_button, compare_stop, compare_upload, compare_outputs = compare_parts
        compare_outputs = [*compare_outputs, compare_state]
        engine = {"concurrency_limit": config.concurrency, "concurrency_id": "engine"}
        light = {"concurrency_limit": None, "show_progress": "hidden"}

        run_button.click(zero_gpu(handlers.run), [*run_inputs, warm_start, trace_state], explorer_outputs,
                         api_name="generate",
                         show_progress="minimal", show_progress_on=[status], **engine)
        stop_button.click(handlers.stop, None, status, api_name="stop", **light)
        upload_button.upload(handlers.replay, upload_button, explorer_outputs, api_name="replay", **light)

        step_slider.input(handlers.show_step, [step_slider, trace_state], step_outputs, api_name="show_step",
                          trigger_mode="always_last", **light)
        previous_button.click(handlers.step_by(-1), [step_slider, trace_state], step_outputs,
                              api_visibility="private", **light)
        next_button.click(handlers.step_by(1), [step_slider, trace_state], step_outputs, api_visibility="private",
                          **light)
        play_outputs = [playing, play_timer, play_button, *step_outputs]
        play_button.click(handlers.toggle_play, [playing, step_slider, trace_state], play_outputs,
                          api_visibility="private", **light)
        play_timer.tick(handlers.play_tick, [step_slider, trace_state], play_outputs, api_visibility="private",
                        **light)

        compare_button.click(zero_gpu(handlers.compare), run_inputs, compare_outputs, api_name="compare",
                             show_progress="minimal", show_progress_on=[compare_outputs[0]], **engine)
        compare_stop.click(handlers.stop, None, compare_outputs[0], api_visibility="private", **light)
        compare_upload.upload(handlers.replay_comparison, compare_upload, compare_outputs,
                              api_name="replay_comparison", **light)

        sweep_lengths, sweep_button, sweep_outputs = sweep_parts
        sweep_button.click(zero_gpu(handlers.context_sweep), [sweep_lengths, *run_inputs[1:5]], sweep_outputs,
                           api_name="context_sweep", show_progress="minimal", show_progress_on=[sweep_outputs[0]],
                           **engine)

        preset_radio, custom_group, load_button, models_status = model_fields
        preset_radio.change(lambda preset: gr.Group(visible=preset == CUSTOM), preset_radio, custom_group,
                            api_visibility="private", **light)
        load_button.click(handlers.load_models, run_inputs[1:5], models_status, api_name="load_models",
                          show_progress="minimal", **engine)
    return demo


def _run_panel(prompts: list[str], start_preset: str, start_choice: ModelChoice):
    prompt = gr.Textbox(label="Prompt", lines=7, max_lines=20, value=prompts[0] if prompts else "",
                        elem_id="prompt")
    gr.Examples(examples=[[text] for text in prompts], inputs=[prompt], label="Example prompts (held-out code)",
                examples_per_page=4)
    with gr.Row():
        run_button = gr.Button("Generate", variant="primary", elem_id="generate")
        stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
    drafter = gr.Radio([("Mamba", "mamba"), ("Transformer", "transformer"), ("target alone", "none")],
                       value="mamba", label="Drafter", elem_id="drafter")
    tree = gr.Dropdown(SHAPE_CHOICES, value="3,2,2,1,1", allow_custom_value=True, label="Tree shape",
                       info="Branching factor per depth (e.g. 3,2,2,1,1, at most 512 nodes) or chain:K; ucb and"
                            " thompson choose among shapes with a bandit; dynamic:N grows N nodes by drafter"
                            " confidence.")
    with gr.Group(visible=False) as bandit_group:
        arms = gr.Textbox(";".join(format_shape(arm) for arm in DEFAULT_ARMS), label="Bandit arms (tree shapes)",
                          info="Tree shapes separated by ';', e.g. 1,1,1,1;3,2,2,1,1. Empty: the default pool.",
                          elem_id="arms")
        reward = gr.Radio([("tokens per second", "tokens_per_second"), ("tokens per step", "tokens_per_step")],
                          value="tokens_per_second", label="Bandit reward",
                          info="Tokens per step does not depend on the machine's speed.")
        warm_start = gr.Checkbox(False, label="Start from the previous run's arm statistics",
                                 info="The previous run on this page must be a bandit run with the same arms and reward.",
                                 elem_id="warm-start")
    tree.change(lambda value: gr.Group(visible=(value or "").strip().lower() in BANDITS), tree, bandit_group,
                api_visibility="private", concurrency_limit=None, show_progress="hidden")
    decoding = gr.Radio(["greedy", "sampling"], value="greedy", label="Decoding")
    with gr.Group(visible=False) as sampling_group:
        temperature = gr.Slider(0.05, 2.0, value=0.8, step=0.05, label="Temperature")
        top_k = gr.Number(value=0, precision=0, minimum=0, label="Top-k", info="0 keeps every token.")
        top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.01, label="Top-p", info="1 keeps every token.")
        seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
    decoding.change(lambda mode: gr.Group(visible=mode == "sampling"), decoding, sampling_group,
                    api_visibility="private", concurrency_limit=None, show_progress="hidden")
    max_new_tokens = gr.Slider(1, 512, value=64, step=1, label="Max new tokens")

    with gr.Accordion("Models", open=start_preset == CUSTOM):
        preset = gr.Radio(PRESET_CHOICES, value=start_preset, label="Model preset",
                          info="bundled: small models trained for this app; pythia: Pythia target and drafters"
                               " with Mamba-130M (hub download, GPU advised); custom: your own.")
        custom = start_preset == CUSTOM
        with gr.Group(visible=custom) as custom_group:
            target = gr.Textbox(label="Target (hub id or folder)", value=start_choice.target if custom else "")
            mamba = gr.Textbox(label="Mamba drafter (hub id or folder)",
                               value=(start_choice.mamba or "") if custom else "")
            transformer = gr.Textbox(label="Transformer drafter (hub id or folder)",
                                     value=(start_choice.transformer or "") if custom else "")
        load_button = gr.Button("Load models", size="sm")
        models_status = gr.Markdown()

    inputs = [prompt, preset, target, mamba, transformer, drafter, tree, decoding, temperature, top_k, top_p, seed,
              max_new_tokens, arms, reward]
    return inputs, warm_start, run_button, stop_button, (preset, custom_group, load_button, models_status)


def _context_sweep_panel():
    with gr.Accordion("Drafting cost against context length", open=False, elem_id="context-sweep"):
        gr.Markdown(f"Drafts a few trees of shape {format_shape(SWEEP_SHAPE)} after contexts of each length (random"
                    " tokens) with the models chosen in the run panel, and times each drafter and the target's"
                    " verification. The Mamba drafter's state has the same size at every length, while a Transformer"
                    " drafter's KV cache grows with the context.")
        with gr.Row(equal_height=True):
            lengths = gr.Textbox("128,512,1024,2048", label="Context lengths (tokens)", scale=3,
                                 info=f"Comma-separated, at most {SWEEP_MAX_LENGTHS} lengths of up to"
                                      f" {SWEEP_MAX_TOKENS} tokens.",
                                 elem_id="sweep-lengths")
            button = gr.Button("Measure", scale=1, elem_id="sweep-run")
        status = gr.Markdown(elem_id="sweep-status")
        table = gr.HTML(elem_id="sweep-table")
        with gr.Row():
            time_plot = gr.Plot(label="Drafting time against context length")
            cache_plot = gr.Plot(label="Cache size against context length")
    return lengths, button, [status, table, time_plot, cache_plot]


def _compare_tab():
    gr.Markdown("Runs the run panel's prompt and settings with the Mamba drafter, the Transformer drafter and the"
                " target alone, one step of each in turn so that machine noise affects all three alike.")
    with gr.Row():
        compare_button = gr.Button("Run comparison", variant="primary", elem_id="compare-run")
        compare_stop = gr.Button("Stop", variant="stop")
        compare_upload = gr.UploadButton("Replay trace files", file_types=[".json"], file_count="multiple")
    compare_status = gr.Markdown(elem_id="compare-status")
    table = gr.Dataframe(label="Side by side. Speedup: tokens/s over the target alone's. τ: mean accepted length.",
                         interactive=False, elem_id="compare-table", wrap=True,
                         column_widths=["17%", "9%", "9%", "7%", "15%", "13%", "14%", "16%"])
    greedy_check = gr.HTML(elem_id="greedy-check")
    with gr.Row():
        accepted_plot = gr.Plot(label="Accepted length per step")
        progress_plot = gr.Plot(label="Tokens over time")
    cache_plot = gr.Plot(label="Drafter cache against context length")
    files = gr.File(label="Trace files of the three runs", file_count="multiple", interactive=False)
    gr.Markdown("Peak memory is the process's peak resident set size on CPU, shared by all runs in the process,"
                " and the CUDA memory allocated by torch on GPU; the three runs are interleaved, so on GPU it covers"
                " all three. Drafter cache sizes are exact per run.")
    outputs = [compare_status, table, greedy_check, accepted_plot, progress_plot, cache_plot, files]
    return compare_button, compare_stop, compare_upload, outputs


def launch(demo: gr.Blocks, server_name: str | None = None, server_port: int | None = None,
           share: bool | None = None, queue_size: int = 32, **kwargs):
    """Queue and launch `demo`; server name, port and share fall back to Gradio's environment variables.

    Gradio reads GRADIO_SERVER_NAME (default 127.0.0.1), GRADIO_SERVER_PORT (default 7860) and
    GRADIO_SHARE (default off) when the matching argument is None.
    """
    demo.queue(max_size=queue_size, default_concurrency_limit=1)
    return demo.launch(server_name=server_name, server_port=server_port, share=share, css=CSS, show_error=True,
                       footer_links=["api", "gradio"], **kwargs)
