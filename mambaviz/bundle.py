"""Measure trained models and write them out as the bundled models: fp16 safetensors and a model card each.

Besides the losses, the cards give an estimate of greedy speculative decoding computed from full forward
passes: in greedy decoding the output is the target's greedy continuation, so a draft is accepted down to
the first depth where the drafter's candidates miss the target's token. One teacher-forced drafter forward
over prompt + continuation gives the drafter's rank of every target token, which settles every step.
"""

import json
import logging
import platform
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from transformers import MambaForCausalLM

from mambaviz.scan import mamba_training_forward

if TYPE_CHECKING:
    from mambaviz.train import PreparedData, RunSettings, SizePreset, TrainingRecord

logger = logging.getLogger(__name__)

MODEL_NAMES = ("target", "mamba", "transformer")
ESTIMATE_PROMPTS = 20
ESTIMATE_NEW_TOKENS = 128
# Greedy chain of 5, and a tree with 3 children at the root, 2 at depths 2 and 3, then 1.
ESTIMATE_SHAPES = ((1, 1, 1, 1, 1), (3, 2, 2, 1, 1))


def model_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """Return (batch, length, vocab) float32 logits, through the chunked scan for Mamba models."""
    if isinstance(model, MambaForCausalLM):
        return mamba_training_forward(model, input_ids)
    return model(input_ids=input_ids).logits.float()


def count_parameters(model: torch.nn.Module) -> int:
    """Count distinct parameters, so a tied embedding and output head count once."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, windows: torch.Tensor, batch_size: int) -> tuple[float, torch.Tensor]:
    """Measure the mean next-token cross-entropy (nats per token) over `windows` in fp32.

    Returns:
        The loss and the model's greedy (argmax) prediction at every position, shape (windows, l).
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    predictions = []
    for start in range(0, len(windows), batch_size):
        batch = windows[start : start + batch_size]
        logits = model_logits(model, batch[:, :-1])  # (b, l, v)
        total += F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten(), reduction="sum").item()
        count += batch[:, 1:].numel()
        predictions.append(logits.argmax(dim=-1))  # (b, l)
    model.train(was_training)
    return total / count, torch.cat(predictions)


@torch.no_grad()
def target_token_ranks(drafter: torch.nn.Module, sequence: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Rank each continuation token of `sequence` under the drafter, 0 being the drafter's argmax.

    Args:
        sequence: (1, l) prompt followed by the target's greedy continuation.
        prompt_length: number of prompt tokens at the start of `sequence`.

    Returns:
        (l - prompt_length,) int64 ranks.
    """
    logits = model_logits(drafter, sequence[:, :-1])[0, prompt_length - 1 :]  # (continuation, v)
    chosen = sequence[0, prompt_length:]  # (continuation,)
    chosen_logits = logits.gather(1, chosen[:, None])  # (continuation, 1)
    return (logits > chosen_logits).sum(dim=1)


def greedy_accepted_length(ranks: torch.Tensor, tree_shape: tuple[int, ...]) -> tuple[int, int]:
    """Walk greedy speculative decoding over a continuation whose drafter ranks are `ranks`.

    At each step the node on the target's path at depth i is in the draft tree when its rank is below
    the branching factor `tree_shape[i]`. The target then adds its bonus token. This assumes each depth's
    children are the drafter's top-k tokens, as in a top-k draft tree.

    Returns:
        (committed tokens, steps), so that committed / steps is the mean accepted length.
    """
    committed, steps, position = 0, 0, 0
    total = len(ranks)
    while position < total:
        depth = 0
        while depth < len(tree_shape) and position + depth < total and ranks[position + depth] < tree_shape[depth]:
            depth += 1
        accepted = min(depth + 1, total - position)
        committed += accepted
        position += accepted
        steps += 1
    return committed, steps


@torch.no_grad()
def estimate_accepted_lengths(target, drafters: dict, prompts_ids: list[torch.Tensor], new_tokens: int) -> dict:
    """Estimate each drafter's mean accepted length for every shape in `ESTIMATE_SHAPES`.

    Returns:
        {drafter name: {shape: mean accepted length}} over all prompts together.
    """
    totals = {name: {shape: [0, 0] for shape in ESTIMATE_SHAPES} for name in drafters}
    target.eval()
    for prompt_ids in prompts_ids:
        sequence = target.generate(
            prompt_ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=target.config.eos_token_id
        )  # (1, prompt + continuation)
        if sequence.shape[1] <= prompt_ids.shape[1]:
            continue
        for name, drafter in drafters.items():
            drafter.eval()
            ranks = target_token_ranks(drafter, sequence, prompt_ids.shape[1])
            for shape in ESTIMATE_SHAPES:
                committed, steps = greedy_accepted_length(ranks, shape)
                totals[name][shape][0] += committed
                totals[name][shape][1] += steps
    return {
        name: {shape: committed / max(1, steps) for shape, (committed, steps) in by_shape.items()}
        for name, by_shape in totals.items()
    }


def export_models(
    models: dict,
    records: dict,
    preset: "SizePreset",
    settings: "RunSettings",
    data: "PreparedData",
    output: Path,
    train_windows: torch.Tensor,
    heldout_windows: torch.Tensor,
    prompts: list[str],
) -> None:
    """Measure each model, then write it as fp16 safetensors with the tokenizer and a model card.

    Args:
        train_windows, heldout_windows: (windows, l + 1) token windows for the loss measurements.
        prompts: held-out prompts for the accepted length estimate; the first `ESTIMATE_PROMPTS` are used.
    """
    output.mkdir(parents=True, exist_ok=True)
    (output / "corpus_manifest.json").write_text(json.dumps(data.manifest, indent=1))

    losses = {}
    heldout_predictions = {}
    for name, model in models.items():
        train_loss, _ = evaluate_loss(model, train_windows, preset.batch_size)
        heldout_loss, heldout_predictions[name] = evaluate_loss(model, heldout_windows, preset.batch_size)
        losses[name] = {"train": train_loss, "heldout": heldout_loss}
        logger.info("%s: train loss %.4f, held-out loss %.4f nats/token", name, train_loss, heldout_loss)

    # Top-1 agreement with the target under teacher forcing: the chance that a greedy drafter's token is
    # accepted at a position whose prefix the target already accepted.
    for name in models:
        agreement = (heldout_predictions[name] == heldout_predictions["target"]).float().mean().item()
        losses[name]["agreement"] = agreement
        if name != "target":
            logger.info("%s: top-1 agreement with the target on held-out tokens %.1f%%", name, 100 * agreement)

    prompts_ids = [data.tokenizer(prompt, return_tensors="pt")["input_ids"] for prompt in prompts[:ESTIMATE_PROMPTS]]
    drafters = {name: model for name, model in models.items() if name != "target"}
    estimates = estimate_accepted_lengths(models["target"], drafters, prompts_ids, ESTIMATE_NEW_TOKENS)
    for name, by_shape in estimates.items():
        for shape, accepted_length in by_shape.items():
            logger.info("%s: estimated greedy mean accepted length %.2f for tree shape %s", name, accepted_length, shape)

    for name, model in models.items():
        folder = output / name
        if folder.exists():
            shutil.rmtree(folder)
        half = type(model)(model.config)
        half.load_state_dict(model.state_dict())
        half = half.to(torch.float16)
        half.config.dtype = torch.float16
        half.save_pretrained(folder, safe_serialization=True)
        data.tokenizer.save_pretrained(folder)
        card = model_card(
            name, model, records[name], losses, estimates, len(prompts_ids), preset, settings, data.manifest, train_windows, heldout_windows
        )
        (folder / "README.md").write_text(card)
        logger.info("wrote %s model to %s", name, folder)


def model_card(
    name, model, record: "TrainingRecord", losses: dict, estimates: dict, estimate_prompts: int, preset, settings, manifest, train_windows, heldout_windows
) -> str:
    """Write the README.md of one exported model: data, parameters, training and measured losses."""
    roles = {
        "target": "This is the target, the model whose output speculative decoding reproduces exactly.",
        "mamba": "This is the Mamba drafter, which proposes draft trees for the bundled target.",
        "transformer": "This is the Transformer drafter, the baseline of about the same size as the Mamba drafter.",
    }
    architecture = type(model).__name__
    config = model.config
    if architecture == "MambaForCausalLM":
        shape = f"hidden size {config.hidden_size}, {config.num_hidden_layers} layer(s), state size {config.state_size}, expand {config.expand}, conv kernel {config.conv_kernel}, tied embeddings"
    else:
        shape = f"hidden size {config.hidden_size}, {config.num_hidden_layers} layer(s), {config.num_attention_heads} heads, context {config.max_position_embeddings}, parallel residual, rotary on 25% of each head, untied output head"
    if record.distill_weight is None:
        objective = "next-token cross-entropy on the training tokens."
    elif record.distill_weight == 0:
        objective = "next-token cross-entropy only (no distillation)."
    else:
        objective = (
            f"distilled from the bundled target: {record.distill_weight:g} x KL(target || drafter) over the full "
            f"vocabulary + {1 - record.distill_weight:g} x next-token cross-entropy. Both drafters were trained "
            "together on identical batches with identical loss, schedule and optimizer."
        )
        if record.refine_steps:
            objective += (
                f" The last {record.refine_steps} of the {record.steps} steps are a second warmup and cosine cycle"
                " at half the peak learning rate (a warm restart) on new batches."
            )
    splits = manifest["splits"]
    estimate_rows = "\n".join(
        f"| {drafter} | " + " | ".join(f"{estimates[drafter][shape]:.2f}" for shape in ESTIMATE_SHAPES) + " |"
        for drafter in estimates
    )
    loss_rows = "\n".join(
        f"| {other} | {losses[other]['train']:.4f} | {losses[other]['heldout']:.4f} | {100 * losses[other]['agreement']:.1f}% |"
        for other in MODEL_NAMES
        if other in losses
    )
    reproduce = (
        f"python -m mambaviz train --size {settings.size} --seed {settings.seed} --target-tokens {settings.target_tokens}"
        f" --drafter-tokens {settings.drafter_tokens} --drafter-refine-tokens {settings.drafter_refine_tokens}"
        f" --distill-weight {settings.distill_weight:g} --precision {settings.precision}"
    )
    if settings.max_files is not None:
        reproduce += f" --max-files {settings.max_files}"
    return f"""# mambaviz bundled model: {name}

{roles[name]} It is a tiny model trained from scratch so that mambaviz can run offline; it
writes plausible Python but is no general-purpose code model.

## Model

- Architecture: `{architecture}` ({config.model_type}), {shape}.
- Parameters: {count_parameters(model):,}.
- Vocabulary: {config.vocab_size} tokens, byte-level BPE trained on the training split; `<|endoftext|>` (id {config.eos_token_id}) ends each file.
- Weights: safetensors in float16; load with `AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)` for CPU use.

## Data

- The `.py` files of the Python {manifest['python_version']} standard library (site-packages excluded): {manifest['files']} files, {manifest['bytes']:,} bytes.
- Split by SHA-256 of each file's relative path: {splits['train']['files']} train files ({splits['train']['bytes']:,} bytes), {splits['heldout']['files']} held-out files ({splits['heldout']['bytes']:,} bytes).
- Corpus manifest SHA-256: `{manifest['sha256']}` (file list in `../corpus_manifest.json`).

## Training

- Objective: {objective}
- Tokens seen: {record.tokens:,} in {record.steps} steps of {record.batch_size} x {record.context_length} tokens, random windows of the training stream.
- Optimizer: AdamW (betas 0.9, 0.95, weight decay 0.1 on weight matrices), peak learning rate {record.learning_rate:g}, 5% linear warmup, cosine decay to 10%, gradient clipping at 1.0.
- Precision: {settings.precision} autocast{' with fp32 master weights' if settings.precision == 'bf16' else ''}; seed {settings.seed}.
- Wall time of this training phase{' (both drafters together, target forward included)' if record.distill_weight is not None else ''}: {record.wall_seconds / 60:.1f} minutes on {platform.machine()} with {torch.get_num_threads()} torch threads (torch {torch.__version__}).
- Reproduce all three models: `{reproduce}`

## Loss (nats per token)

Measured after training in fp32 on {train_windows.numel() - len(train_windows):,} train tokens and {heldout_windows.numel() - len(heldout_windows):,} held-out tokens, windows of {preset.context_length}.
Top-1 agreement is how often a model's argmax equals the target's argmax given the true prefix: an
estimate of a greedy drafter's per-token acceptance rate.

| model | train | held-out | top-1 agreement with the target (held-out) |
| --- | --- | --- | --- |
{loss_rows}

Estimated greedy mean accepted length (committed tokens per target forward pass) on the first
{estimate_prompts} held-out prompts with up to {ESTIMATE_NEW_TOKENS} new tokens each. It is computed from full forward passes,
not by the decoding engine, and assumes the drafter's top-k tokens as the children at every depth:

| drafter | chain of 5 | tree (3,2,2,1,1) |
| --- | --- | --- |
{estimate_rows}

## Speculative decoding on held-out prompts

Not measured by the training run. Measure mean accepted length and tokens/s against the target alone
with the decoding engine:

    python -m mambaviz bench --preset bundled --prompts bundled --limit 20 \\
        --drafters mamba,transformer,none --trees "1,1,1,1,1;3,2,2,1,1" --max-new-tokens 128
"""
