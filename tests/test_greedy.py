"""Greedy speculative decoding must reproduce the target's own greedy decoding token for token."""

import pytest

from mambaviz.engine import RunSettings, encode_prompt, generate, run
from mambaviz.search import FixedShape
from mambaviz.trace import Trace
from tests.conftest import CODE_SAMPLES, greedy_reference

SHAPES = [(1,), (1, 1, 1, 1, 1), (3, 2, 2, 1, 1), (2, 2, 2, 1, 1, 1), (4,), (3, 3, 2, 1), (1, 1, 4)]
PROMPTS = ["def add(a, b):", "class Point:\n    def", "for item in items:\n", "import"]


@pytest.mark.parametrize("drafter", ["mamba", "transformer"])
@pytest.mark.parametrize("shape", SHAPES)
def test_greedy_tree_output_equals_target_greedy(code_models, drafter, shape):
    for prompt in PROMPTS:
        prompt_ids = encode_prompt(code_models, prompt)
        expected = greedy_reference(code_models.target, prompt_ids, 24, code_models.vocab_size)
        settings = RunSettings(drafter=drafter, max_new_tokens=24, stop_at_eos=False)
        trace = run(code_models, prompt, settings, FixedShape(shape))
        assert trace.new_tokens == expected, f"prompt {prompt!r}"


@pytest.mark.parametrize("drafter", ["mamba", "transformer"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 2, 2, 1, 1), (2, 2, 2, 2)])
def test_greedy_small_vocab_accepts_drafts_and_stays_exact(small_vocab_models, drafter, shape):
    models = small_vocab_models
    accepted = 0
    for prompt in ["a b c", "d", "g f e d c b", "b b b b"]:
        prompt_ids = encode_prompt(models, prompt)
        expected = greedy_reference(models.target, prompt_ids, 40, models.vocab_size)
        trace = run(models, prompt, RunSettings(drafter=drafter, max_new_tokens=40, stop_at_eos=False),
                    FixedShape(shape))
        assert trace.new_tokens == expected
        accepted += sum(len(step.accepted) for step in trace.steps)
    # With 8 tokens the drafters hit the target's argmax often, so commits of accepted paths are exercised.
    assert accepted > 10


def test_self_drafting_accepts_whole_chains(code_trio):
    from mambaviz.models import load_model_set

    models = load_model_set(None, target=code_trio["target"], transformer=code_trio["target"], device="cpu")
    prompt_ids = encode_prompt(models, PROMPTS[0])
    expected = greedy_reference(models.target, prompt_ids, 30, models.vocab_size)
    trace = run(models, PROMPTS[0], RunSettings("transformer", 30, stop_at_eos=False), FixedShape((1, 1, 1, 1)))
    assert trace.new_tokens == expected
    assert [step.accepted_length for step in trace.steps[:-1]] == [5] * (len(trace.steps) - 1)


def test_target_alone_matches_reference(code_models):
    prompt_ids = encode_prompt(code_models, CODE_SAMPLES[1])
    expected = greedy_reference(code_models.target, prompt_ids, 20, code_models.vocab_size)
    trace = run(code_models, CODE_SAMPLES[1], RunSettings("none", 20, stop_at_eos=False))
    assert trace.new_tokens == expected
    assert all(step.nodes == [] and step.accepted_length == 1 for step in trace.steps)


def test_eos_inside_tree_ends_the_run_at_eos(small_vocab_models):
    models = small_vocab_models
    eos = models.eos_token_id
    for prompt in ["a b c", "d", "g f e d c b", "b b b b", "c", "e e", "f a"]:
        prompt_ids = encode_prompt(models, prompt)
        expected = greedy_reference(models.target, prompt_ids, 60, models.vocab_size, eos=eos)
        for drafter in ["mamba", "transformer", "none"]:
            trace = run(models, prompt, RunSettings(drafter, 60), FixedShape((3, 2, 2, 1, 1)))
            assert trace.new_tokens == expected
            if eos in expected:
                assert trace.new_tokens[-1] == eos
                assert trace.steps[-1].stop_reason == "eos"


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 11])
def test_token_limit_inside_tree_is_exact(small_vocab_models, limit):
    trace = run(small_vocab_models, "a b", RunSettings("mamba", limit, stop_at_eos=False), FixedShape((2, 2, 2, 2)))
    assert len(trace.new_tokens) == limit
    assert trace.steps[-1].stop_reason == "max_new_tokens"
    assert all(len(step.shape) <= limit - 1 for step in trace.steps[:1])


def test_context_limit_stops_at_target_context(tmp_path):
    from mambaviz.models import load_model_set
    from tests.conftest import save_trio, word_tokenizer

    paths = save_trio(tmp_path, word_tokenizer(["a", "b", "c"]), context=16)
    models = load_model_set(None, **paths, device="cpu")
    trace = run(models, "a b c a", RunSettings("mamba", 100, stop_at_eos=False), FixedShape((2, 2, 2)))
    assert len(trace.prompt_ids) + len(trace.new_tokens) == 16
    assert trace.steps[-1].stop_reason == "context"
    expected = greedy_reference(models.target, trace.prompt_ids, 12, models.vocab_size)
    assert trace.new_tokens == expected


def test_step_records_are_consistent(code_models):
    trace = Trace(settings={}, prompt_ids=[])
    prompt_ids = encode_prompt(code_models, PROMPTS[1])
    records = list(generate(code_models, prompt_ids, RunSettings("mamba", 20), FixedShape((3, 2, 1)), trace))
    assert records == trace.steps
    context = len(prompt_ids)
    for index, step in enumerate(records):
        assert step.index == index
        assert step.context_length == context
        context += step.accepted_length
        accepted_tokens = [step.nodes[node].token for node in step.accepted]
        assert step.committed[: len(accepted_tokens)] == accepted_tokens
        assert [step.nodes[node].status for node in step.accepted] == ["accepted"] * len(step.accepted)
        assert sum(node.status == "accepted" for node in step.nodes) == len(step.accepted)
        assert all(0 <= node.draft_prob <= 1 and 0 <= node.target_prob <= 1 for node in step.nodes)
        assert step.draft_seconds > 0
        assert step.verify_seconds > 0
        assert step.other_seconds >= 0
        assert step.forward_seconds <= step.step_seconds
        assert step.target_cache_bytes > 0
        assert step.drafter_cache_bytes > 0
        assert step.peak_memory_bytes > 0
