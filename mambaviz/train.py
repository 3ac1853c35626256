"""Train the bundled target, Mamba drafter and Transformer drafter from scratch: `python -m mambaviz train`.

Pipeline, each phase resumable from the checkpoint folder:

1. corpus: read the standard library, split it, write the manifest and the held-out prompts;
2. tokenizer: byte-level BPE on the train split, then encode both splits into token streams;
3. target: a GPTNeoXForCausalLM trained with cross-entropy on random windows of the train stream;
4. drafters: a MambaForCausalLM and a GPTNeoXForCausalLM trained together on the same batches, each
   with the same loss: `distill_weight` * KL(target || drafter) + (1 - distill_weight) * cross-entropy,
   over a warmup-cosine learning rate cycle and then a shorter second cycle at half the peak;
5. export: fp16 safetensors, tokenizer and a model card (README.md) per model folder.

Batches are drawn from a generator seeded with (seed, step), so a resumed run draws the same batches as
an uninterrupted one.
"""

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import (
    AutoModelForCausalLM,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    PreTrainedTokenizerFast,
)

from mambaviz import corpus
from mambaviz.errors import MambavizError
from mambaviz.bundle import MODEL_NAMES, count_parameters, export_models, model_logits

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TransformerShape:
    hidden_size: int
    layers: int
    heads: int


@dataclass(frozen=True)
class MambaShape:
    hidden_size: int
    layers: int
    state_size: int = 16


@dataclass(frozen=True)
class SizePreset:
    """Model shapes and training settings that a `--size` name stands for."""

    vocab_size: int
    context_length: int
    target: TransformerShape
    transformer: TransformerShape
    mamba: MambaShape
    batch_size: int
    target_tokens: int
    drafter_tokens: int
    drafter_refine_tokens: int
    eval_tokens: int
    target_learning_rate: float
    drafter_learning_rate: float
    prompt_count: int
    max_files: int | None = None
    extra: dict = field(default_factory=dict)


SIZES = {
    # Target 15.57M parameters, drafters 2.80M (Mamba) and 3.05M (Transformer), so each drafter is below
    # 1/5 of the target and within 10% of the other. All 21.4M parameters take about 43 MB in fp16.
    # The token budgets keep the whole run well inside 150 minutes on a 2-core CPU. Measured here, the
    # target trained at about 1,900 tokens/s with bf16 autocast. A drafter step (target forward and both
    # drafters) took about 3.3 times longer per token, most of it in the Mamba scan.
    "full": SizePreset(
        vocab_size=4096,
        context_length=512,
        target=TransformerShape(hidden_size=384, layers=7, heads=6),
        transformer=TransformerShape(hidden_size=224, layers=2, heads=4),
        mamba=MambaShape(hidden_size=256, layers=4),
        batch_size=8,
        target_tokens=2_600_000,
        drafter_tokens=1_200_000,
        drafter_refine_tokens=196_608,
        eval_tokens=65_536,
        target_learning_rate=1.5e-3,
        drafter_learning_rate=2e-3,
        prompt_count=200,
    ),
    # For tests: seconds on a laptop CPU, on the first files of the standard library only.
    "tiny": SizePreset(
        vocab_size=320,
        context_length=64,
        target=TransformerShape(hidden_size=64, layers=2, heads=2),
        transformer=TransformerShape(hidden_size=32, layers=1, heads=2),
        mamba=MambaShape(hidden_size=32, layers=1, state_size=4),
        batch_size=4,
        target_tokens=4 * 64 * 12,
        drafter_tokens=4 * 64 * 12,
        drafter_refine_tokens=4 * 64 * 4,
        eval_tokens=1024,
        target_learning_rate=1e-2,
        drafter_learning_rate=1e-2,
        prompt_count=5,
        max_files=60,
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the `train` subcommand's options to `parser`."""
    parser.add_argument("--output", type=Path, default=Path("assets/models"), help="folder for the exported models (default: assets/models)")
    parser.add_argument("--checkpoints", type=Path, default=Path("checkpoints"), help="folder for resumable checkpoints (default: checkpoints)")
    parser.add_argument("--prompts", type=Path, default=Path("assets/prompts/heldout.jsonl"), help="JSON Lines file for the held-out prompts")
    parser.add_argument("--size", choices=sorted(SIZES), default="full", help="model shapes and budgets: full (bundled models) or tiny (tests)")
    parser.add_argument("--seed", type=int, default=0, help="seed for initialization, batches and prompt choice (default: 0)")
    parser.add_argument("--target-tokens", type=int, help="training tokens for the target (default: set by --size)")
    parser.add_argument("--drafter-tokens", type=int, help="training tokens for each drafter (default: set by --size)")
    parser.add_argument("--drafter-refine-tokens", type=int, help="training tokens for each drafter in a second learning rate cycle at half the peak, 0 for none (default: set by --size)")
    parser.add_argument("--distill-weight", type=float, default=0.5, help="weight of KL(target || drafter) in the drafter loss, from 0 to 1; cross-entropy gets the rest (default: 0.5)")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto", help="matmul precision in training: bf16 autocast, fp32, or auto (bf16 where the CPU has native bf16)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0, help="minutes between resumable checkpoints (default: 5)")
    parser.add_argument("--max-files", type=int, help="use only the first N standard library files, for quick runs (default: set by --size)")
    parser.set_defaults(run=run)


@dataclass
class RunSettings:
    size: str
    seed: int
    target_tokens: int
    drafter_tokens: int
    drafter_refine_tokens: int
    distill_weight: float
    precision: str
    max_files: int | None


def resolve_settings(args: argparse.Namespace) -> RunSettings:
    """Validate the options and fill in the size preset's defaults."""
    preset = SIZES[args.size]
    target_tokens = preset.target_tokens if args.target_tokens is None else args.target_tokens
    drafter_tokens = preset.drafter_tokens if args.drafter_tokens is None else args.drafter_tokens
    drafter_refine_tokens = preset.drafter_refine_tokens if args.drafter_refine_tokens is None else args.drafter_refine_tokens
    step_tokens = preset.batch_size * preset.context_length
    if drafter_refine_tokens != 0 and drafter_refine_tokens < step_tokens:
        raise MambavizError(f"--drafter-refine-tokens {drafter_refine_tokens} is invalid; use 0 or at least {step_tokens} tokens for --size {args.size}.")
    for name, value in (("--target-tokens", target_tokens), ("--drafter-tokens", drafter_tokens)):
        if value < step_tokens:
            raise MambavizError(f"{name} {value} is below one batch; use at least {step_tokens} tokens for --size {args.size}.")
    if not 0.0 <= args.distill_weight <= 1.0:
        raise MambavizError(f"--distill-weight {args.distill_weight} is invalid; use a number from 0 to 1.")
    if args.checkpoint_minutes <= 0:
        raise MambavizError(f"--checkpoint-minutes {args.checkpoint_minutes} is invalid; use a positive number.")
    if args.threads is not None and args.threads < 1:
        raise MambavizError(f"--threads {args.threads} is invalid; use 1 or more.")
    max_files = preset.max_files if args.max_files is None else args.max_files
    if max_files is not None and max_files < 20:
        raise MambavizError(f"--max-files {max_files} is too small; use at least 20 so both splits get files.")

    precision = args.precision
    if precision == "auto":
        # A private torch check (present in torch 2.13): bf16 autocast is slower than fp32 without native bf16.
        precision = "bf16" if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    return RunSettings(args.size, args.seed, target_tokens, drafter_tokens, drafter_refine_tokens, args.distill_weight, precision, max_files)


def run(args: argparse.Namespace) -> int:
    """Run every phase that has no finished checkpoint yet, then export the three models."""
    settings = resolve_settings(args)
    preset = SIZES[settings.size]
    if args.threads:
        torch.set_num_threads(args.threads)
    args.checkpoints.mkdir(parents=True, exist_ok=True)
    logger.info("train settings: %s, %d torch threads", asdict(settings), torch.get_num_threads())

    data = prepare_data(preset, settings, args.checkpoints, args.prompts)
    target, target_record = train_target(preset, settings, data, args.checkpoints, args.checkpoint_minutes)
    drafters, drafter_record = train_drafters(preset, settings, data, target, args.checkpoints, args.checkpoint_minutes)

    models = {"target": target, **drafters}
    records = {"target": target_record, "mamba": drafter_record, "transformer": drafter_record}
    train_windows = evaluation_windows(data.train_tokens, preset.context_length, preset.eval_tokens)
    heldout_windows = evaluation_windows(data.heldout_tokens, preset.context_length, preset.eval_tokens)
    prompts = [json.loads(line)["prompt"] for line in args.prompts.read_text(encoding="utf-8").splitlines()]
    export_models(models, records, preset, settings, data, args.output, train_windows, heldout_windows, prompts)
    return 0


# ---------------------------------------------------------------- data


@dataclass
class PreparedData:
    tokenizer: PreTrainedTokenizerFast
    train_tokens: np.ndarray
    heldout_tokens: np.ndarray
    manifest: dict


def prepare_data(preset: SizePreset, settings: RunSettings, checkpoints: Path, prompts_path: Path) -> PreparedData:
    """Read the corpus, write the manifest and prompts, and train and apply the tokenizer, once per checkpoint folder."""
    folder = checkpoints / "data"
    done_marker = folder / "done.json"
    expected = {"vocab_size": preset.vocab_size, "max_files": settings.max_files, "seed": settings.seed, "python": sys.version.split()[0]}
    # A missing prompts file is rebuilt along with the rest, since the export step reads it.
    if done_marker.exists() and json.loads(done_marker.read_text()) == expected and prompts_path.exists():
        logger.info("reusing corpus and tokenizer from %s", folder)
        return PreparedData(
            tokenizer=PreTrainedTokenizerFast.from_pretrained(folder / "tokenizer"),
            train_tokens=np.load(folder / "train_tokens.npy"),
            heldout_tokens=np.load(folder / "heldout_tokens.npy"),
            manifest=json.loads((folder / "manifest.json").read_text()),
        )

    started = time.perf_counter()
    files = corpus.read_stdlib()
    if settings.max_files is not None:
        files = files[: settings.max_files]
    manifest = corpus.build_manifest(files)
    train_texts = [f.text for f in files if f.split == "train"]
    heldout_texts = [f.text for f in files if f.split == "heldout"]
    if not train_texts or not heldout_texts:
        raise MambavizError(f"the corpus of {len(files)} files has an empty train or held-out split; use more files.")

    prompts = corpus.extract_prompts(files, count=preset.prompt_count, seed=settings.seed)
    corpus.write_prompts(prompts, prompts_path)
    tokenizer = corpus.train_tokenizer(train_texts, preset.vocab_size)
    train_tokens = corpus.encode_files(tokenizer, train_texts)
    heldout_tokens = corpus.encode_files(tokenizer, heldout_texts)

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(folder / "tokenizer")
    np.save(folder / "train_tokens.npy", train_tokens)
    np.save(folder / "heldout_tokens.npy", heldout_tokens)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1))
    done_marker.write_text(json.dumps(expected))
    logger.info(
        "corpus: %d files, %d train and %d held-out tokens, %d prompts written to %s, in %.0f s",
        manifest["files"], len(train_tokens), len(heldout_tokens), len(prompts), prompts_path, time.perf_counter() - started,
    )
    return PreparedData(tokenizer, train_tokens, heldout_tokens, manifest)


def sample_batch(tokens: np.ndarray, batch_size: int, context_length: int, seed: int, step: int) -> torch.Tensor:
    """Draw `batch_size` random windows of `context_length` + 1 tokens, the same ones for the same (seed, step)."""
    generator = np.random.default_rng([seed, step])
    starts = generator.integers(0, len(tokens) - context_length - 1, size=batch_size)
    windows = np.stack([tokens[start : start + context_length + 1] for start in starts])
    return torch.from_numpy(windows.astype(np.int64))  # (batch, context + 1)


def evaluation_windows(tokens: np.ndarray, context_length: int, max_tokens: int) -> torch.Tensor:
    """Cut windows of `context_length` + 1 tokens, about `max_tokens` in all, evenly spaced over the stream.

    Spreading them over the whole stream keeps one unusual file at its start from deciding the loss.
    """
    if len(tokens) < context_length + 1:
        raise MambavizError(f"the evaluation stream of {len(tokens)} tokens is shorter than one window of {context_length + 1}.")
    count = max(1, min(max_tokens, len(tokens) - 1) // context_length)
    starts = np.linspace(0, len(tokens) - context_length - 1, count).astype(np.int64)
    windows = [tokens[start : start + context_length + 1] for start in starts]
    return torch.from_numpy(np.stack(windows).astype(np.int64))  # (windows, context + 1)


# ---------------------------------------------------------------- models


def build_target_config(shape: TransformerShape, preset: SizePreset, tokenizer: PreTrainedTokenizerFast) -> GPTNeoXConfig:
    """Describe a Pythia-style GPT-NeoX: parallel residual, rotary on a quarter of each head, untied head."""
    return GPTNeoXConfig(
        vocab_size=preset.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        intermediate_size=4 * shape.hidden_size,
        max_position_embeddings=preset.context_length,
        rotary_pct=0.25,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_mamba_config(shape: MambaShape, preset: SizePreset, tokenizer: PreTrainedTokenizerFast) -> MambaConfig:
    """Describe a Mamba with the layout of `state-spaces/mamba-130m-hf` (expand 2, conv 4, tied head)."""
    return MambaConfig(
        vocab_size=preset.vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.layers,
        state_size=shape.state_size,
        expand=2,
        conv_kernel=4,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def new_model(config, seed: int) -> torch.nn.Module:
    """Initialize a model from `config` with a fixed seed, in fp32."""
    torch.manual_seed(seed)
    model_class = MambaForCausalLM if isinstance(config, MambaConfig) else GPTNeoXForCausalLM
    return model_class(config).float()


# ---------------------------------------------------------------- training


def learning_rate_at(step: int, total_steps: int, peak: float) -> float:
    """Linear warmup over the first 5% of steps, then cosine decay to 10% of the peak."""
    warmup = max(1, total_steps // 20)
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def drafter_learning_rate_at(step: int, main_steps: int, refine_steps: int, peak: float) -> float:
    """Run one warmup-cosine cycle over the main steps, then a second one at half the peak (a warm restart)."""
    if step < main_steps:
        return learning_rate_at(step, main_steps, peak)
    return learning_rate_at(step - main_steps, refine_steps, peak / 2)


def build_optimizer(model: torch.nn.Module, learning_rate: float) -> torch.optim.AdamW:
    """Build AdamW with weight decay on matrices and embeddings, none on norms, biases, A_log or D."""
    decayed, plain = [], []
    for name, parameter in model.named_parameters():
        if parameter.ndim < 2 or name.endswith("A_log"):
            plain.append(parameter)
        else:
            decayed.append(parameter)
    groups = [{"params": decayed, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=(0.9, 0.95), eps=1e-8)


def autocast(settings: RunSettings):
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=settings.precision == "bf16")


def save_state(path: Path, state: dict) -> None:
    """Write a checkpoint atomically, so a crash while writing leaves the previous one intact."""
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


# Settings that change what a phase computes; a checkpoint written under other values is not reused.
PHASE_SETTINGS = {
    "target": ("size", "seed", "target_tokens", "precision", "max_files"),
    "drafters": ("size", "seed", "target_tokens", "drafter_tokens", "distill_weight", "precision", "max_files"),
}


def load_state(path: Path, settings: RunSettings, phase: str) -> dict | None:
    """Load a phase's checkpoint if it was written with the same settings for that phase, else None."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    saved = state.get("settings") or {}
    current = asdict(settings)
    mismatched = [key for key in PHASE_SETTINGS[phase] if saved.get(key) != current[key]]
    if state.get("format") != CHECKPOINT_FORMAT or mismatched:
        logger.warning("ignoring %s checkpoint %s: written with other values of %s", phase, path, mismatched or "format")
        return None
    return state


@dataclass
class TrainingRecord:
    """Facts about one training phase, as the model cards report them."""

    tokens: int
    steps: int
    wall_seconds: float
    learning_rate: float
    batch_size: int
    context_length: int
    distill_weight: float | None
    refine_steps: int = 0
    final_train_loss: dict[str, float] = field(default_factory=dict)
    heldout_loss: dict[str, float] = field(default_factory=dict)


def train_target(preset: SizePreset, settings: RunSettings, data: PreparedData, checkpoints: Path, checkpoint_minutes: float):
    """Train the target with cross-entropy; return the model and its training record."""
    folder = checkpoints / "target"
    folder.mkdir(parents=True, exist_ok=True)
    model = new_model(build_target_config(preset.target, preset, data.tokenizer), settings.seed)
    optimizer = build_optimizer(model, preset.target_learning_rate)
    total_steps = settings.target_tokens // (preset.batch_size * preset.context_length)
    state = load_state(folder / "state.pt", settings, "target")
    step, elapsed = 0, 0.0
    if state is not None:
        model.load_state_dict(state["models"]["target"])
        optimizer.load_state_dict(state["optimizers"]["target"])
        step, elapsed = state["step"], state["elapsed"]
        logger.info("resuming target at step %d of %d", step, total_steps)

    logger.info("training target: %d parameters, %d steps of %d tokens", count_parameters(model), total_steps, preset.batch_size * preset.context_length)
    model.train()
    last_save = time.perf_counter()
    segment_start = time.perf_counter()
    progress = tqdm(total=total_steps, initial=step, desc="target", unit="step", dynamic_ncols=True)
    while step < total_steps:
        batch = sample_batch(data.train_tokens, preset.batch_size, preset.context_length, settings.seed, step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(step, total_steps, preset.target_learning_rate)

        with autocast(settings):
            logits = model_logits(model, batch[:, :-1])  # (b, l, v)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)
        progress.set_postfix(loss=f"{loss.item():.3f}")

        if step == total_steps or time.perf_counter() - last_save > checkpoint_minutes * 60:
            now = time.perf_counter()
            elapsed += now - segment_start
            segment_start = now
            save_state(folder / "state.pt", {
                "format": CHECKPOINT_FORMAT, "settings": asdict(settings), "step": step, "elapsed": elapsed,
                "models": {"target": model.state_dict()}, "optimizers": {"target": optimizer.state_dict()},
            })
            last_save = now
    progress.close()
    elapsed += time.perf_counter() - segment_start

    record = TrainingRecord(
        tokens=total_steps * preset.batch_size * preset.context_length, steps=total_steps, wall_seconds=elapsed,
        learning_rate=preset.target_learning_rate, batch_size=preset.batch_size,
        context_length=preset.context_length, distill_weight=None,
    )
    return model, record


def distillation_loss(drafter_logits: torch.Tensor, target_log_probs: torch.Tensor, labels: torch.Tensor, distill_weight: float):
    """Return (loss, cross-entropy) with loss = w * KL(target || drafter) + (1 - w) * cross-entropy, per token."""
    drafter_log_probs = F.log_softmax(drafter_logits.flatten(0, 1).float(), dim=-1)  # (b*l, v)
    cross_entropy = F.nll_loss(drafter_log_probs, labels.flatten())
    if distill_weight == 0.0:
        return cross_entropy, cross_entropy
    kl = F.kl_div(drafter_log_probs, target_log_probs, log_target=True, reduction="batchmean")
    return distill_weight * kl + (1.0 - distill_weight) * cross_entropy, cross_entropy


def train_drafters(preset, settings, data, target, checkpoints: Path, checkpoint_minutes: float):
    """Train the Mamba and Transformer drafters on identical batches with identical losses.

    Both drafters get the same seed-derived batches, learning rate schedule and loss, and the target's
    log-probabilities for a batch are computed once and used by both.
    """
    folder = checkpoints / "drafters"
    folder.mkdir(parents=True, exist_ok=True)
    drafters = {
        "mamba": new_model(build_mamba_config(preset.mamba, preset, data.tokenizer), settings.seed + 1),
        "transformer": new_model(build_target_config(preset.transformer, preset, data.tokenizer), settings.seed + 2),
    }
    optimizers = {name: build_optimizer(model, preset.drafter_learning_rate) for name, model in drafters.items()}
    main_steps = settings.drafter_tokens // (preset.batch_size * preset.context_length)
    refine_steps = settings.drafter_refine_tokens // (preset.batch_size * preset.context_length)
    total_steps = main_steps + refine_steps
    state = load_state(folder / "state.pt", settings, "drafters")
    # A checkpoint from inside the refinement cycle is only valid for the same refinement budget.
    if state is not None and state["step"] > main_steps and state["settings"].get("drafter_refine_tokens") != settings.drafter_refine_tokens:
        logger.warning("ignoring drafters checkpoint at step %d: written with another --drafter-refine-tokens", state["step"])
        state = None
    step, elapsed = 0, 0.0
    if state is not None:
        for name in drafters:
            drafters[name].load_state_dict(state["models"][name])
            optimizers[name].load_state_dict(state["optimizers"][name])
        step, elapsed = state["step"], state["elapsed"]
        logger.info("resuming drafters at step %d of %d", step, total_steps)

    for name, model in drafters.items():
        logger.info("training %s drafter: %d parameters", name, count_parameters(model))
    target.eval()
    for model in drafters.values():
        model.train()
    # Drafter batches use another stream of seeds than the target's, so they are not the target's batches replayed.
    batch_seed = settings.seed + 1_000_003
    last_save = time.perf_counter()
    segment_start = time.perf_counter()
    progress = tqdm(total=total_steps, initial=step, desc="drafters", unit="step", dynamic_ncols=True)
    while step < total_steps:
        batch = sample_batch(data.train_tokens, preset.batch_size, preset.context_length, batch_seed, step)
        inputs, labels = batch[:, :-1], batch[:, 1:]
        target_log_probs = None
        if settings.distill_weight > 0:
            with torch.no_grad(), autocast(settings):
                target_log_probs = F.log_softmax(model_logits(target, inputs).float(), dim=-1).flatten(0, 1)  # (b*l, v)

        losses = {}
        for name, model in drafters.items():
            optimizer = optimizers[name]
            for group in optimizer.param_groups:
                group["lr"] = drafter_learning_rate_at(step, main_steps, refine_steps, preset.drafter_learning_rate)
            with autocast(settings):
                logits = model_logits(model, inputs)  # (b, l, v)
            loss, cross_entropy = distillation_loss(logits, target_log_probs, labels, settings.distill_weight)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[name] = cross_entropy.item()
        step += 1
        progress.update(1)
        progress.set_postfix(mamba=f"{losses['mamba']:.3f}", transformer=f"{losses['transformer']:.3f}")

        if step == total_steps or time.perf_counter() - last_save > checkpoint_minutes * 60:
            now = time.perf_counter()
            elapsed += now - segment_start
            segment_start = now
            save_state(folder / "state.pt", {
                "format": CHECKPOINT_FORMAT, "settings": asdict(settings), "step": step, "elapsed": elapsed,
                "models": {name: m.state_dict() for name, m in drafters.items()},
                "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
            })
            last_save = now
    progress.close()
    elapsed += time.perf_counter() - segment_start

    record = TrainingRecord(
        tokens=total_steps * preset.batch_size * preset.context_length, steps=total_steps, wall_seconds=elapsed,
        learning_rate=preset.drafter_learning_rate, batch_size=preset.batch_size,
        context_length=preset.context_length, distill_weight=settings.distill_weight, refine_steps=refine_steps,
    )
    return drafters, record


