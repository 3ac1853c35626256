"""Tree-shape policies: bandit choices on scripted rewards, dynamic-tree limits, and losslessness."""

from collections import Counter

import pytest
import torch

from mambaviz.engine import RunSettings, encode_prompt, run
from mambaviz.errors import MambavizError
from mambaviz.sampling import SamplingConfig
from mambaviz.search import (
    UCB_EXPLORATION,
    ConfidencePlan,
    DynamicTree,
    ShapeBandit,
    build_policy,
    committed_within,
    fits_inside,
    parse_arms,
)
from mambaviz.trace import Trace
from tests.conftest import greedy_reference
from tests.test_sampling import MIN_P_VALUE, chi_square_p_value, exact_table_distribution, table_decode

ARMS = ((1, 1, 1), (2, 2), (3, 1, 1))


def test_ucb_plays_every_arm_first_then_the_best():
    bandit = ShapeBandit(ARMS, algorithm="ucb", reward="tokens_per_step")
    rewards = {0: 1.0, 1: 3.0, 2: 2.0}
    first = []
    for _ in range(3):
        plan = bandit.next_plan()
        first.append(bandit.chosen)
        bandit.observe(plan, int(rewards[bandit.chosen]), 0.01)
    assert first == [0, 1, 2]
    later = []
    for _ in range(60):
        plan = bandit.next_plan()
        later.append(bandit.chosen)
        bandit.observe(plan, int(rewards[bandit.chosen]), 0.01)
    assert Counter(later).most_common(1)[0][0] == 1
    assert Counter(later)[1] > 40
    assert bandit.pulls == [Counter(first + later)[arm] for arm in range(3)]


def test_ucb_tokens_per_second_reward_prefers_fast_arm():
    bandit = ShapeBandit(ARMS, algorithm="ucb", reward="tokens_per_second")
    seconds = {0: 0.01, 1: 0.04, 2: 0.02}  # all commit 2 tokens; arm 0 is fastest
    for _ in range(50):
        plan = bandit.next_plan()
        bandit.observe(plan, 2, seconds[bandit.chosen])
    assert bandit.pulls[0] == max(bandit.pulls)
    assert bandit.means()[0] == pytest.approx(200.0)


def test_committed_within_smaller_shapes():
    # Accepted path: the first child at depth 1, the second at depth 2, the first at depth 3.
    ranks = [0, 1, 0]
    assert committed_within((1, 1, 1), ranks) == 2
    assert committed_within((2, 2, 1), ranks) == 4
    assert committed_within((2, 2), ranks) == 3
    assert committed_within((1,), []) == 1
    assert fits_inside((2, 1), (3, 2, 2))
    assert not fits_inside((1, 1, 1, 1), (3, 2, 2))
    assert not fits_inside((3, 3), (3, 2, 2))


def test_greedy_step_shares_counts_with_contained_arms():
    bandit = ShapeBandit(((1, 1), (2, 2, 1), (3, 1)), algorithm="ucb", reward="tokens_per_step")
    bandit.chosen = 1
    bandit.observe(bandit.plans[1], 3, 0.01, accepted_ranks=[0, 1])
    assert bandit.pulls == [0, 1, 0]
    # 1,1 keeps only first children, so it would have stopped after depth 1. 3,1 does not fit inside 2,2,1.
    assert bandit.observations == [1, 1, 0]
    assert bandit.token_sums == [2.0, 3.0, 0.0]


def test_ucb_bonus_grows_with_reward_spread():
    # Arm 1 is 10% better than arm 0. Constant rewards leave no doubt, so arm 0 gets only its first
    # pull. Rewards that swing by ±40% make the bandit check arm 0 again, more so with a larger constant.
    def pulls(swing: int, exploration: float = UCB_EXPLORATION) -> list[int]:
        bandit = ShapeBandit(ARMS[:2], algorithm="ucb", reward="tokens_per_step", exploration=exploration)
        for index in range(60):
            plan = bandit.next_plan()
            base = 10 if bandit.chosen == 0 else 11
            bandit.observe(plan, base + (swing if index % 2 else -swing), 0.01)
        return bandit.pulls

    assert pulls(0) == [1, 59]
    assert pulls(4)[0] > 1
    assert pulls(4)[1] > pulls(4)[0]
    assert pulls(4, exploration=2.0)[0] > pulls(4, exploration=0.5)[0]


def test_ucb_median_step_time_ignores_one_slow_step():
    bandit = ShapeBandit(ARMS[:2], algorithm="ucb", reward="tokens_per_second")
    for seconds in (0.01, 0.01, 0.5, 0.01):  # one step stalled by another process
        bandit.chosen = 0
        bandit.observe(bandit.plans[0], 2, seconds)
    assert bandit.means()[0] == pytest.approx(200.0)


def test_thompson_plays_unplayed_arms_then_mostly_the_best():
    bandit = ShapeBandit(ARMS, algorithm="thompson", reward="tokens_per_step", seed=4)
    rewards = {0: [1, 2], 1: [4, 5], 2: [2, 3]}
    chosen = []
    for step in range(80):
        plan = bandit.next_plan()
        chosen.append(bandit.chosen)
        bandit.observe(plan, rewards[bandit.chosen][step % 2], 0.01)
    assert chosen[:3] == [0, 1, 2]
    assert Counter(chosen[3:])[1] > 60


def test_bandit_decision_reports_arms_pulls_and_scores():
    bandit = ShapeBandit(ARMS, algorithm="ucb", reward="tokens_per_step")
    for _ in range(4):
        bandit.observe(bandit.next_plan(), 2, 0.01)
    bandit.next_plan()
    decision = bandit.decision()
    assert decision["arms"] == ["1,1,1", "2,2", "3,1,1"]
    assert decision["pulls"] == [2, 1, 1]
    assert decision["mean_rewards"] == [2.0, 2.0, 2.0]
    assert all(score is not None for score in decision["scores"])
    assert decision["chosen"] in (1, 2)


def test_bandit_warm_start_loads_statistics():
    first = ShapeBandit(ARMS, reward="tokens_per_step")
    for _ in range(6):
        first.observe(first.next_plan(), 3, 0.01)
    second = ShapeBandit(ARMS, reward="tokens_per_step")
    second.load_statistics(first.decision())
    assert second.pulls == first.pulls
    assert second.means() == first.means()
    other = ShapeBandit(((1,), (2,)))
    with pytest.raises(MambavizError, match="other arms"):
        other.load_statistics(first.decision())


@pytest.mark.parametrize("budget, depth", [(1, 4), (7, 3), (16, 8), (40, 5)])
def test_dynamic_tree_respects_budget_and_depth(code_models, budget, depth):
    from mambaviz.engine import build_drafter
    from mambaviz.metrics import ForwardClock

    drafter = build_drafter(code_models, "mamba", ForwardClock(code_models.device))
    drafter.prefill(encode_prompt(code_models, "def add(a, b):"))
    plan = ConfidencePlan(budget, depth, max_children=4)
    tree = drafter.draft(plan, SamplingConfig(), None)
    assert len(tree) == budget
    assert tree.max_depth() <= depth
    assert len(plan.expansion_order) == budget
    for node in range(len(tree)):
        if tree.parents[node] != -1:
            assert tree.path_probs[node] <= tree.path_probs[tree.parents[node]] + 1e-12


def test_dynamic_tree_keeps_most_probable_candidates(code_models):
    from mambaviz.engine import build_drafter
    from mambaviz.metrics import ForwardClock

    prompt_ids = encode_prompt(code_models, "class Point:")
    reference = build_drafter(code_models, "mamba", ForwardClock(code_models.device))
    reference.prefill(prompt_ids)
    root_probs = torch.softmax(reference._consume(reference.pending)[0, : code_models.vocab_size], dim=-1)

    drafter = build_drafter(code_models, "mamba", ForwardClock(code_models.device))
    drafter.prefill(prompt_ids)
    tree = drafter.draft(ConfidencePlan(5, 1, max_children=8), SamplingConfig(), None)
    assert len(tree) == 5
    assert tree.tokens == torch.topk(root_probs, 5).indices.tolist()


def test_dynamic_tree_feeds_only_nodes_with_room_below(code_models):
    from mambaviz.engine import build_drafter
    from mambaviz.metrics import ForwardClock

    drafter = build_drafter(code_models, "transformer", ForwardClock(code_models.device))
    drafter.prefill(encode_prompt(code_models, "import os"))
    tree = drafter.draft(ConfidencePlan(10, 3, max_children=3), SamplingConfig(), None)
    deepest = tree.max_depth()
    assert not any(tree.fed[node] for node in range(len(tree)) if tree.depths[node] == deepest)


POLICIES = ["ucb", "thompson", "dynamic:12", "dynamic:40"]


@pytest.mark.parametrize("drafter", ["mamba", "transformer"])
@pytest.mark.parametrize("tree", POLICIES)
def test_greedy_output_equals_target_under_policy(code_models, drafter, tree):
    for prompt in ["def add(a, b):", "class Point:\n    def"]:
        prompt_ids = encode_prompt(code_models, prompt)
        expected = greedy_reference(code_models.target, prompt_ids, 30, code_models.vocab_size)
        trace = run(code_models, prompt, RunSettings(drafter, 30, stop_at_eos=False), build_policy(tree))
        assert trace.new_tokens == expected


@pytest.mark.parametrize("tree", POLICIES)
def test_greedy_small_vocab_under_policy(small_vocab_models, tree):
    prompt_ids = encode_prompt(small_vocab_models, "a b c")
    expected = greedy_reference(small_vocab_models.target, prompt_ids, 40, small_vocab_models.vocab_size)
    trace = run(small_vocab_models, "a b c", RunSettings("mamba", 40, stop_at_eos=False), build_policy(tree))
    assert trace.new_tokens == expected
    assert all(step.policy is not None for step in trace.steps)


@pytest.mark.parametrize("tree", ["ucb", "thompson", "dynamic:6"])
def test_sampling_keeps_target_distribution_under_policy(tree):
    sampling = SamplingConfig(temperature=1.0)
    policy = build_policy(tree, arms="1,1,1;3,2;2,2,1", reward="tokens_per_step", seed=2)
    generator = torch.Generator().manual_seed(99)
    samples = 4000
    counts = Counter()
    for _ in range(samples):
        counts[table_decode(policy, sampling, generator, with_replacement=False)] += 1
    assert chi_square_p_value(counts, exact_table_distribution(sampling), samples) > MIN_P_VALUE


def test_search_state_round_trips_through_trace(code_models, tmp_path):
    trace = run(code_models, "def add(a, b):", RunSettings("mamba", 24), build_policy("ucb", "1,1;2,2,1;3,1"))
    path = tmp_path / "bandit.json"
    trace.save(path)
    loaded = Trace.load(path)
    assert loaded == trace
    last = loaded.steps[-1].policy
    assert last["kind"] == "bandit"
    assert sum(last["pulls"]) == len(loaded.steps)
    assert loaded.steps[0].shape == [1, 1]

    dynamic = run(code_models, "import os", RunSettings("mamba", 16), build_policy("dynamic:8"))
    dynamic.save(path)
    step = Trace.load(path).steps[0]
    assert step.shape == []
    assert step.policy["kind"] == "dynamic"
    assert len(step.policy["expansion_order"]) == len(step.nodes)


@pytest.mark.parametrize("tree, arms, message", [
    ("dynamic:x", None, "dynamic:NODES"),
    ("dynamic:0", None, "budget 0"),
    ("dynamic:600", None, "budget 600"),
    ("ucb", ";", "Arm pool"),
    ("ucb", "1,1;0,2", "at least 1"),
    ("greedy", None, "invalid"),
])
def test_build_policy_rejects_invalid_values(tree, arms, message):
    with pytest.raises(MambavizError, match=message):
        build_policy(tree, arms)


def test_parse_arms_reads_a_pool():
    assert parse_arms("1,1,1,1; 3,2,2,1,1;chain:3") == ((1, 1, 1, 1), (3, 2, 2, 1, 1), (1, 1, 1))


def test_dynamic_tree_rejects_invalid_depth():
    with pytest.raises(MambavizError, match="depth 20"):
        DynamicTree(8, max_depth=20)
