"""The step loop: draft → verify → accept → commit, one StepRecord per step.

    prompt → prefill(target), prefill(drafter)
    loop:  drafter.draft(shape) → tree
           target.verify(tree)  → logits for every node in one forward pass
           accept(tree, logits) → accepted path + bonus token
           commit: target KV cache and drafter cache keep only the accepted path
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from mambaviz.drafters.base import Drafter
from mambaviz.drafters.mamba import MambaDrafter
from mambaviz.drafters.none import NoDrafter
from mambaviz.drafters.transformer import TransformerDrafter
from mambaviz.errors import MambavizError
from mambaviz.metrics import ForwardClock, now, peak_memory_bytes
from mambaviz.models import DRAFTER_NAMES, ModelSet
from mambaviz.sampling import SamplingConfig
from mambaviz.search import FixedShape, ShapePolicy
from mambaviz.trace import NodeRecord, StepRecord, Trace, summarize
from mambaviz.tree import DraftTree, TreePlan
from mambaviz.verify import Acceptance, Target, accept

logger = logging.getLogger(__name__)


@dataclass
class RunSettings:
    drafter: str = "mamba"
    max_new_tokens: int = 128
    sampling: SamplingConfig = SamplingConfig()
    seed: int = 0
    stop_at_eos: bool = True

    def __post_init__(self) -> None:
        if self.drafter not in DRAFTER_NAMES:
            raise MambavizError(f"Unknown drafter {self.drafter!r}; choose one of {', '.join(DRAFTER_NAMES)}.")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise MambavizError(f"Max new tokens {self.max_new_tokens!r} is invalid; it must be a positive integer.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise MambavizError(f"Seed {self.seed!r} is invalid; it must be a non-negative integer.")


def build_drafter(models: ModelSet, name: str, clock: ForwardClock) -> Drafter:
    if name == "none":
        return NoDrafter(models.vocab_size, models.device, clock)
    model = models.drafter_model(name)
    if name == "mamba":
        return MambaDrafter(model, models.vocab_size, clock)
    return TransformerDrafter(model, models.vocab_size, clock)


def encode_prompt(models: ModelSet, prompt: str) -> list[int]:
    """Tokenize `prompt`, rejecting an empty prompt or one that leaves no room in the target's context."""
    if not prompt or not prompt.strip():
        raise MambavizError("The prompt is empty; enter some text to continue.")
    # The tokenizer's own special tokens (a BOS for Llama-style tokenizers) are kept, as in the models' training.
    ids = models.tokenizer(prompt)["input_ids"]
    if not ids:
        raise MambavizError("The prompt encodes to no tokens; enter some text to continue.")
    if models.max_context is not None and len(ids) >= models.max_context:
        raise MambavizError(f"The prompt has {len(ids)} tokens but the target's context is {models.max_context} tokens;"
                            f" shorten it to fewer than {models.max_context} tokens.")
    return ids


def fit_plan(plan: TreePlan, remaining: int, room: int | None) -> TreePlan:
    """Cut a plan so one step never commits more than `remaining` tokens or runs past the context.

    A step commits at most depth + 1 tokens, so deeper drafts would be thrown away anyway.
    """
    depth = remaining - 1
    if room is not None:
        depth = min(depth, room - 1)
    return plan if plan.max_depth <= depth else plan.limited(depth)


def generate(
    models: ModelSet,
    prompt_ids: list[int],
    settings: RunSettings,
    policy: ShapePolicy,
    trace: Trace | None = None,
) -> Iterator[StepRecord]:
    """Run speculative decoding and yield a StepRecord after every step; steps are also appended to `trace`.

    The target alone drafts nothing, so with drafter `none` the policy is neither consulted nor
    taught: a bandit would otherwise record pulls of shapes that were never drafted.
    """
    if settings.drafter == "none":
        policy = FixedShape((1,))
    device = models.device
    clock = ForwardClock(device)
    drafter = build_drafter(models, settings.drafter, clock)
    target = Target(models.target, models.vocab_size, clock)
    texts = models.token_texts()
    # Drafting and acceptance need independent random streams: equal seeds would correlate the
    # drafter's samples with the acceptance draws and bias the output.
    draft_generator = torch.Generator(device=device).manual_seed(2 * settings.seed)
    accept_generator = torch.Generator().manual_seed(2 * settings.seed + 1)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    start = now(device)
    target.prefill(prompt_ids)
    drafter.prefill(prompt_ids)
    if trace is not None:
        trace.prefill_seconds = now(device) - start

    context_length = len(prompt_ids)
    generated = 0
    for index in range(settings.max_new_tokens):
        room = None if models.max_context is None else models.max_context - context_length
        if room is not None and room <= 0:
            break
        plan = fit_plan(policy.next_plan(), settings.max_new_tokens - generated, room)
        forward_before = clock.seconds

        step_start = now(device)
        tree = drafter.draft(plan, settings.sampling, draft_generator)
        drafted = now(device)
        logits = target.verify(tree)
        verified = now(device)

        outcome = accept(tree, logits, settings.sampling, accept_generator)
        committed = [tree.tokens[node] for node in outcome.accepted] + [outcome.bonus_token]
        committed, stop_reason = _truncate(committed, settings, models, generated, context_length)
        if stop_reason is None:
            target.commit(outcome.accepted)
            drafter.commit(tree, outcome.accepted, outcome.bonus_token)
        # A step also shows a bandit what smaller shapes would have committed, unless it was cut.
        ranks = None
        if policy.uses_accepted_ranks and stop_reason is None:
            ranks = accepted_ranks(tree, outcome.accepted)
        policy.observe(plan, len(committed), now(device) - step_start, ranks)

        record = _record(index, context_length, tree, outcome, committed, texts, stop_reason, policy)
        record.draft_seconds = drafted - step_start
        record.verify_seconds = verified - drafted
        record.forward_seconds = clock.seconds - forward_before
        record.drafter_cache_bytes = drafter.cache_bytes()
        record.target_cache_bytes = target.cache_bytes()
        record.peak_memory_bytes = peak_memory_bytes(device)
        record.other_seconds = now(device) - verified
        context_length += len(committed)
        generated += len(committed)
        if trace is not None:
            trace.steps.append(record)
        yield record
        if stop_reason is not None:
            break


def accepted_ranks(tree: DraftTree, accepted: list[int]) -> list[int]:
    """Return each accepted node's rank among its siblings, from depth 1 down (0: the first child drafted)."""
    ranks = []
    for node in accepted:
        ranks.append(tree.children(tree.parents[node]).index(node))
    return ranks


def _truncate(
    committed: list[int], settings: RunSettings, models: ModelSet, generated: int, context_length: int
) -> tuple[list[int], str | None]:
    """Cut the step's tokens at EOS (kept) and at the token limit; return them and why the run stops, if it does."""
    if settings.stop_at_eos and models.eos_token_id is not None and models.eos_token_id in committed:
        return committed[: committed.index(models.eos_token_id) + 1], "eos"
    remaining = settings.max_new_tokens - generated
    if len(committed) >= remaining:
        return committed[:remaining], "max_new_tokens"
    if models.max_context is not None and context_length + len(committed) >= models.max_context:
        return committed, "context"
    return committed, None


def _record(
    index: int,
    context_length: int,
    tree: DraftTree,
    outcome: Acceptance,
    committed: list[int],
    texts: list[str],
    stop_reason: str | None,
    policy: ShapePolicy,
) -> StepRecord:
    nodes = [
        NodeRecord(
            id=node,
            parent=tree.parents[node],
            depth=tree.depths[node],
            token=tree.tokens[node],
            text=texts[tree.tokens[node]],
            draft_prob=tree.draft_probs[node],
            path_prob=tree.path_probs[node],
            target_prob=outcome.target_probs[node],
            accept_prob=outcome.accept_probs[node],
            status=outcome.status[node],
        )
        for node in range(len(tree))
    ]
    return StepRecord(
        index=index,
        context_length=context_length,
        shape=list(tree.shape),
        root_token=tree.root_token,
        root_text=texts[tree.root_token],
        nodes=nodes,
        accepted=list(outcome.accepted),
        bonus_token=outcome.bonus_token,
        bonus_text=texts[outcome.bonus_token],
        committed=committed,
        committed_text=[texts[token] for token in committed],
        draft_seconds=0.0,
        verify_seconds=0.0,
        other_seconds=0.0,
        forward_seconds=0.0,
        drafter_cache_bytes=0,
        target_cache_bytes=0,
        peak_memory_bytes=0,
        stop_reason=stop_reason,
        policy=policy.decision(),
    )


def run(
    models: ModelSet,
    prompt: str,
    settings: RunSettings,
    policy: ShapePolicy | None = None,
    on_step=None,
) -> Trace:
    """Run a whole generation and return its trace; `on_step(record)` is called after every step."""
    policy = policy or FixedShape((3, 2, 2, 1, 1))
    prompt_ids = encode_prompt(models, prompt)
    trace = Trace(settings=describe_settings(models, prompt, settings, policy), prompt_ids=prompt_ids)
    for record in generate(models, prompt_ids, settings, policy, trace):
        if on_step is not None:
            on_step(record)
    trace.text = models.tokenizer.decode(trace.new_tokens)
    figures = summarize(trace)
    logger.info("run drafter=%s tree=%s: %d tokens in %d steps, %.1f tokens/s, mean accepted length %.2f",
                settings.drafter, policy.describe(), figures["new_tokens"], figures["steps"],
                figures["tokens_per_second"], figures["mean_accepted_length"])
    return trace


def describe_settings(models: ModelSet, prompt: str, settings: RunSettings, policy: ShapePolicy) -> dict:
    return {
        "prompt": prompt,
        "target": models.locations.get("target"),
        "drafter": settings.drafter,
        "drafter_model": models.locations.get(settings.drafter),
        "tree": "-" if settings.drafter == "none" else policy.describe(),
        "temperature": settings.sampling.temperature,
        "top_k": settings.sampling.top_k,
        "top_p": settings.sampling.top_p,
        "max_new_tokens": settings.max_new_tokens,
        "seed": settings.seed,
        "device": str(models.device),
        "dtype": str(models.dtype).removeprefix("torch."),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
