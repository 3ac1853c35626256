"""Drafter caches: the Mamba step against the HF forward, tree states, and cache compaction."""

import pytest
import torch

from mambaviz.drafters.mamba import MambaDrafter, MambaStepper
from mambaviz.drafters.transformer import TransformerDrafter
from mambaviz.models import load_causal_lm
from mambaviz.sampling import SamplingConfig
from mambaviz.verify import Target

CPU = torch.device("cpu")


def test_mamba_step_matches_hf_full_forward(tmp_path):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(3)
    model = MambaForCausalLM(MambaConfig(vocab_size=200, hidden_size=64, state_size=16, num_hidden_layers=3,
                                         expand=2, conv_kernel=4)).eval()
    ids = torch.randint(0, 200, (1, 48))
    with torch.no_grad():
        reference = model(ids).logits[0]  # [l, v]
    stepper = MambaStepper(model)
    state = stepper.zero_state()
    stepped = []
    for token in ids[0]:
        logits, state = stepper.step(token.view(1), state)
        stepped.append(logits[0])
    torch.testing.assert_close(torch.stack(stepped), reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("length", [2, 7, 300])
def test_mamba_scan_matches_steps(length):
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(4)
    model = MambaForCausalLM(MambaConfig(vocab_size=200, hidden_size=64, state_size=16, num_hidden_layers=3,
                                         expand=2, conv_kernel=4)).eval()
    stepper = MambaStepper(model)
    state = stepper.zero_state()
    for token in torch.randint(0, 200, (5,)):  # start from a state some tokens in
        _, state = stepper.step(token.view(1), state)

    ids = torch.randint(0, 200, (length,))
    scanned_logits, scanned = stepper.scan(ids, state)
    for token in ids:
        logits, state = stepper.step(token.view(1), state)
    torch.testing.assert_close(scanned_logits, logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(scanned.conv, state.conv, atol=1e-5, rtol=0)
    torch.testing.assert_close(scanned.ssm, state.ssm, atol=1e-4, rtol=1e-4)


def test_mamba_cache_bytes_do_not_grow_with_context(code_trio):
    model = load_causal_lm(code_trio["mamba"], CPU, torch.float32, "mamba")
    drafter = MambaDrafter(model, vocab_size=50)
    drafter.prefill([1, 2, 3])
    short = drafter.cache_bytes()
    drafter.prefill(list(range(1, 200)))
    assert drafter.cache_bytes() == short
    config = model.config
    assert short == config.num_hidden_layers * config.intermediate_size * (config.conv_kernel + config.state_size) * 4


def make_drafter(kind, code_trio, vocab):
    model = load_causal_lm(code_trio[kind], CPU, torch.float32, kind)
    return MambaDrafter(model, vocab) if kind == "mamba" else TransformerDrafter(model, vocab)


@pytest.mark.parametrize("kind", ["mamba", "transformer"])
def test_tree_node_logits_equal_sequential_path_logits(code_trio, code_models, kind):
    vocab = code_models.vocab_size
    prefix = [4, 9, 31, 7, 2]
    drafter = make_drafter(kind, code_trio, vocab)
    drafter.prefill(prefix)
    tree = drafter.draft((3, 2, 1), SamplingConfig(), None)

    # A fed node's children carry the drafter's probabilities after consuming that node's path.
    fresh = make_drafter(kind, code_trio, vocab)
    for node in range(len(tree)):
        if tree.depths[node] == len(tree.shape):
            continue
        path = [tree.tokens[i] for i in tree.path_to(node)]
        fresh.prefill(prefix + path)
        logits = fresh._consume(fresh.pending)[0, :vocab]
        probs = torch.softmax(logits, dim=-1)
        for child in tree.children(node):
            assert tree.draft_probs[child] == pytest.approx(probs[tree.tokens[child]].item(), abs=1e-5)


@pytest.mark.parametrize("kind", ["mamba", "transformer"])
@pytest.mark.parametrize("accepted_depth", [0, 1, 2, 3])
def test_drafter_cache_after_commit_equals_fresh_prefill(code_trio, code_models, kind, accepted_depth):
    vocab = code_models.vocab_size
    prefix = [4, 9, 31, 7, 2]
    drafter = make_drafter(kind, code_trio, vocab)
    drafter.prefill(prefix)
    tree = drafter.draft((2, 2, 2), SamplingConfig(), None)
    # Accept the last child at every depth, down to accepted_depth (depth 3 is an unfed leaf).
    accepted, node = [], -1
    for _ in range(accepted_depth):
        node = tree.children(node)[-1]
        accepted.append(node)
    bonus = 11
    drafter.commit(tree, accepted, bonus)
    committed = prefix + [tree.tokens[i] for i in accepted] + [bonus]
    assert drafter.pending[-1] == bonus
    assert drafter.consumed + len(drafter.pending) == len(committed)

    continued = drafter._consume(drafter.pending)
    fresh = make_drafter(kind, code_trio, vocab)
    fresh.prefill(committed)
    expected = fresh._consume(fresh.pending)
    torch.testing.assert_close(continued, expected, atol=1e-5, rtol=1e-5)
    if kind == "transformer":
        assert drafter.cache_bytes() == fresh.cache_bytes()


@pytest.mark.parametrize("accepted_depth", [0, 1, 3])
def test_target_cache_after_commit_equals_fresh_prefill(code_trio, code_models, accepted_depth):
    vocab = code_models.vocab_size
    prefix = [4, 9, 31, 7, 2]
    drafter = make_drafter("transformer", code_trio, vocab)
    drafter.prefill(prefix)
    tree = drafter.draft((2, 2, 2), SamplingConfig(), None)
    accepted, node = [], -1
    for _ in range(accepted_depth):
        node = tree.children(node)[0]
        accepted.append(node)

    target = Target(code_models.target, vocab, drafter.clock)
    target.prefill(prefix)
    target.verify(tree)
    target.commit(accepted)
    committed = prefix + [tree.tokens[i] for i in accepted]

    fresh = Target(code_models.target, vocab, drafter.clock)
    fresh.prefill(committed + [0])
    assert len(target.lm) == len(fresh.lm) == len(committed)
    for kept, expected in zip(target.lm.cache.layers, fresh.lm.cache.layers):
        torch.testing.assert_close(kept.keys, expected.keys, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(kept.values, expected.values, atol=1e-5, rtol=1e-5)
