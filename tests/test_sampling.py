"""Sampling must keep the target's distribution exactly: seeded chi-square tests on tiny vocabularies."""

from collections import Counter
from itertools import product

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from mambaviz import verify
from mambaviz.drafters.base import Drafter
from mambaviz.engine import RunSettings, accepted_ranks, encode_prompt, run
from mambaviz.errors import MambavizError
from mambaviz.sampling import SamplingConfig, probabilities
from mambaviz.search import FixedShape, ShapePolicy, committed_within
from mambaviz.tree import ROOT

VOCAB = 4
NEW_TOKENS = 3
MIN_P_VALUE = 1e-3


def context_logits(context: tuple[int, ...], salt: int) -> torch.Tensor:
    """Fixed random logits [v] for a context, different per salt (target or drafter)."""
    seed = hash((salt,) + context) % (2**31)
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 1.5


class TableDrafter(Drafter):
    """A drafter whose logits are a fixed random function of the context: no network, exact and fast."""

    name = "table"

    def reset(self) -> None:
        super().reset()
        self.context: tuple[int, ...] = ()
        self.root_context: tuple[int, ...] = ()

    def _consume(self, tokens):
        self.context += tuple(tokens)
        return context_logits(self.context, salt=1)[None]

    def _begin_tree(self):
        self.root_context = self.context

    def _extend(self, tree, nodes):
        rows = [context_logits(self.root_context + tuple(tree.tokens[i] for i in tree.path_to(node)), salt=1)
                for node in nodes]
        return torch.stack(rows)

    def _keep_path(self, tree, fed_path):
        self.context = self.root_context + tuple(tree.tokens[i] for i in fed_path)

    def cache_bytes(self):
        return 0


def table_decode(shape, sampling, generator, with_replacement, prompt=(1,)):
    """Speculatively decode NEW_TOKENS tokens with the table drafter against the table target.

    `shape` is a tree shape or a ShapePolicy, which then picks each step's plan.
    """
    drafter = TableDrafter(VOCAB, torch.device("cpu"))
    drafter.with_replacement = with_replacement
    drafter.prefill(list(prompt))
    committed = list(prompt)
    while len(committed) - len(prompt) < NEW_TOKENS:
        plan = shape.next_plan() if isinstance(shape, ShapePolicy) else shape
        tree = drafter.draft(plan, sampling, generator)
        contexts = [tuple(committed)] + [tuple(committed) + tuple(tree.tokens[i] for i in tree.path_to(node))
                                         for node in range(len(tree))]
        target_logits = torch.stack([context_logits(context, salt=0) for context in contexts])
        outcome = verify.accept(tree, target_logits, sampling, generator)
        committed += [tree.tokens[node] for node in outcome.accepted] + [outcome.bonus_token]
        drafter.commit(tree, outcome.accepted, outcome.bonus_token)
        if isinstance(shape, ShapePolicy):
            shape.observe(plan, len(outcome.accepted) + 1, 1.0)
    return tuple(committed[len(prompt): len(prompt) + NEW_TOKENS])


def exact_table_distribution(sampling, prompt=(1,)) -> dict[tuple[int, ...], float]:
    """Probability of every NEW_TOKENS-token continuation under the processed target distribution."""
    exact = {}
    for sequence in product(range(VOCAB), repeat=NEW_TOKENS):
        prob, context = 1.0, tuple(prompt)
        for token in sequence:
            prob *= probabilities(context_logits(context, salt=0), sampling)[token].item()
            context += (token,)
        exact[sequence] = prob
    return exact


def chi_square_p_value(counts: Counter, exact: dict, samples: int) -> float:
    """Chi-square goodness of fit, pooling cells expected below 5 samples into one cell."""
    observed, expected, pooled_observed, pooled_expected = [], [], 0, 0.0
    for outcome, prob in exact.items():
        if prob * samples >= 5:
            observed.append(counts.get(outcome, 0))
            expected.append(prob * samples)
        else:
            pooled_observed += counts.get(outcome, 0)
            pooled_expected += prob * samples
    unexpected = sum(count for outcome, count in counts.items() if exact.get(outcome, 0) == 0)
    assert unexpected == 0, "sampled a continuation the target gives probability 0"
    if pooled_expected > 0:
        observed.append(pooled_observed)
        expected.append(pooled_expected)
    expected = np.array(expected) * sum(observed) / sum(expected)
    return chisquare(observed, expected).pvalue


CASES = [
    ((1, 1, 1), SamplingConfig(temperature=1.0), False),
    ((1, 1, 1), SamplingConfig(temperature=0.7, top_k=3), True),
    ((3, 2), SamplingConfig(temperature=1.0), False),
    ((3, 2), SamplingConfig(temperature=1.0), True),
    ((2, 2, 1), SamplingConfig(temperature=1.3, top_p=0.9), False),
    ((4, 1), SamplingConfig(temperature=1.0, top_k=2), False),
]


@pytest.mark.parametrize("shape, sampling, with_replacement", CASES)
def test_sampling_keeps_target_distribution(shape, sampling, with_replacement):
    samples = 4000
    generator = torch.Generator().manual_seed(1234)
    counts = Counter(table_decode(shape, sampling, generator, with_replacement) for _ in range(samples))
    p_value = chi_square_p_value(counts, exact_table_distribution(sampling), samples)
    assert p_value > MIN_P_VALUE


def test_chi_square_check_detects_a_biased_rule(monkeypatch):
    # Accepting every first child samples from the drafter, not the target: the check must see it.
    def accept_first_child(tree, target_probs, generator):
        outcome = original(tree, target_probs, generator)
        path, node = [], ROOT
        while tree.children(node):
            node = tree.children(node)[0]
            path.append(node)
        return verify.Acceptance(path, outcome.bonus_token, outcome.status, outcome.target_probs,
                                 outcome.accept_probs)

    original = verify.accept_sampling
    monkeypatch.setattr(verify, "accept_sampling", accept_first_child)
    sampling = SamplingConfig(temperature=1.0)
    generator = torch.Generator().manual_seed(1234)
    counts = Counter(table_decode((1, 1, 1), sampling, generator, False) for _ in range(4000))
    assert chi_square_p_value(counts, exact_table_distribution(sampling), 4000) < 1e-6


@pytest.mark.parametrize("drafter, shape", [("mamba", (1, 1)), ("mamba", (3, 2)), ("transformer", (2, 2))])
def test_engine_sampling_matches_target_distribution(small_vocab_models, drafter, shape):
    models = small_vocab_models
    sampling = SamplingConfig(temperature=1.0)
    prompt = "a b"
    prompt_ids = encode_prompt(models, prompt)
    with torch.no_grad():
        first = probabilities(models.target(torch.tensor([prompt_ids])).logits[0, -1, : models.vocab_size], sampling)
        exact = {}
        for token in range(models.vocab_size):
            logits = models.target(torch.tensor([prompt_ids + [token]])).logits[0, -1, : models.vocab_size]
            second = probabilities(logits, sampling)
            for following in range(models.vocab_size):
                exact[(token, following)] = (first[token] * second[following]).item()

    samples = 1500
    counts = Counter()
    for seed in range(samples):
        settings = RunSettings(drafter, max_new_tokens=2, sampling=sampling, seed=seed, stop_at_eos=False)
        counts[tuple(run(models, prompt, settings, FixedShape(shape)).new_tokens)] += 1
    assert chi_square_p_value(counts, exact, samples) > MIN_P_VALUE


def test_probabilities_apply_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.25, 0.15, 0.1]))
    top_k = probabilities(logits, SamplingConfig(temperature=1.0, top_k=2))
    torch.testing.assert_close(top_k, torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))
    top_p = probabilities(logits, SamplingConfig(temperature=1.0, top_p=0.7))
    torch.testing.assert_close(top_p, torch.tensor([2 / 3, 1 / 3, 0.0, 0.0]))
    sharp = probabilities(logits, SamplingConfig(temperature=0.5))
    torch.testing.assert_close(sharp, torch.softmax(logits / 0.5, dim=-1))


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": -1.0}, "Temperature -1.0"),
    ({"temperature": float("nan")}, "Temperature nan"),
    ({"top_k": -3}, "Top-k -3"),
    ({"top_p": 0.0}, "Top-p 0.0"),
    ({"top_p": 1.5}, "Top-p 1.5"),
])
def test_sampling_config_rejects_invalid_values(kwargs, message):
    with pytest.raises(MambavizError, match=message):
        SamplingConfig(**kwargs)


def table_step(shape, sampling, generator) -> tuple[int, list[int]]:
    """Draft and verify one tree after the prompt (1,) and return its committed tokens and accepted ranks."""
    drafter = TableDrafter(VOCAB, torch.device("cpu"))
    drafter.prefill([1])
    tree = drafter.draft(shape, sampling, generator)
    contexts = [(1,)] + [(1,) + tuple(tree.tokens[i] for i in tree.path_to(node)) for node in range(len(tree))]
    target_logits = torch.stack([context_logits(context, salt=0) for context in contexts])
    outcome = verify.accept(tree, target_logits, sampling, generator)
    return len(outcome.accepted) + 1, accepted_ranks(tree, outcome.accepted)


def same_distribution_p_value(first: Counter, second: Counter) -> float:
    """Chi-square test that two samples of committed counts come from one distribution."""
    values = sorted(set(first) | set(second))
    return chi2_contingency([[first[value] for value in values], [second[value] for value in values]]).pvalue


@pytest.mark.parametrize("smaller", [(1, 1, 1), (2, 1), (2, 2, 1), (3,)])
def test_sampled_shared_counts_match_direct(smaller):
    # A bandit credits a smaller arm with committed_within(smaller, ranks) of a larger sampled tree.
    # Those counts must follow the distribution of drafting the smaller shape itself.
    sampling = SamplingConfig(temperature=1.0)
    samples = 3000
    generator = torch.Generator().manual_seed(99)
    shared, direct = Counter(), Counter()
    for _ in range(samples):
        _, ranks = table_step((3, 2, 2), sampling, generator)
        shared[committed_within(smaller, ranks)] += 1
        direct[table_step(smaller, sampling, generator)[0]] += 1
    assert same_distribution_p_value(shared, direct) > MIN_P_VALUE


def test_shared_count_check_detects_ignored_ranks():
    # Crediting the smaller chain with the larger tree's own count, ignoring which siblings were
    # accepted, overstates the chain: the check must see it.
    sampling = SamplingConfig(temperature=1.0)
    generator = torch.Generator().manual_seed(99)
    shared, direct = Counter(), Counter()
    for _ in range(3000):
        _, ranks = table_step((3, 2, 2), sampling, generator)
        shared[committed_within((1, 1, 1), [0] * len(ranks))] += 1
        direct[table_step((1, 1, 1), sampling, generator)[0]] += 1
    assert same_distribution_p_value(shared, direct) < 1e-6
