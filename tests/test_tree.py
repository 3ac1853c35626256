"""Tree shapes, node bookkeeping and the tree attention mask."""

import pytest
import torch

from mambaviz.errors import MambavizError
from mambaviz.kvcache import CachedCausalLM
from mambaviz.metrics import ForwardClock
from mambaviz.models import load_causal_lm
from mambaviz.tree import ROOT, DraftTree, ancestor_matrix, count_nodes, parse_shape, validate_shape


def test_count_nodes_of_shapes():
    assert count_nodes((1, 1, 1, 1, 1)) == 5
    assert count_nodes((3, 2, 2, 1, 1)) == 3 + 6 + 12 + 12 + 12
    assert count_nodes((2, 2, 2, 1, 1, 1)) == 2 + 4 + 8 + 8 + 8 + 8


@pytest.mark.parametrize("text, shape", [
    ("3,2,2,1,1", (3, 2, 2, 1, 1)),
    ("(3, 3, 2, 1)", (3, 3, 2, 1)),
    ("[1,1]", (1, 1)),
    ("chain:5", (1, 1, 1, 1, 1)),
    ("1," * 16, (1,) * 16),
    ("8,8,6", (8, 8, 6)),
])
def test_parse_shape_accepts_valid_text(text, shape):
    assert parse_shape(text) == shape


@pytest.mark.parametrize("text, message", [
    ("", "branching factors"),
    ("3,x,2", "branching factors"),
    ("3,-1", "branching factors"),
    ("3,0,1", "at least 1"),
    ("1," * 17, "depth 17"),
    ("8,8,8", "584 nodes"),
    ("chain:", "chain:K"),
    ("chain:0", "depth 0"),
    ("2.5,1", "branching factors"),
])
def test_parse_shape_rejects_invalid_text(text, message):
    with pytest.raises(MambavizError, match=message):
        parse_shape(text)


def test_validate_shape_rejects_non_integers():
    with pytest.raises(MambavizError):
        validate_shape((2, True))
    with pytest.raises(MambavizError):
        validate_shape(())


def test_ancestor_matrix_marks_root_self_and_ancestors():
    # root → 0, 1; 0 → 2, 3; 1 → 4; 3 → 5
    allowed = ancestor_matrix([ROOT, ROOT, 0, 0, 1, 3])
    expected_rows = {0: [0], 1: [0, 1], 2: [0, 2], 3: [0, 1, 3], 4: [0, 1, 4], 5: [0, 2, 5], 6: [0, 1, 4, 6]}
    for row, columns in expected_rows.items():
        assert allowed[row].nonzero().flatten().tolist() == columns


def test_draft_tree_paths_and_children():
    tree = DraftTree(root_token=7, shape=(2, 1))
    a = tree.add(ROOT, 10, 0.5)
    b = tree.add(ROOT, 11, 0.3)
    c = tree.add(a, 12, 0.9)
    assert tree.children(ROOT) == [a, b]
    assert tree.path_to(c) == [a, c]
    assert tree.depths == [1, 1, 2]
    assert tree.max_depth() == 2


@pytest.mark.parametrize("fixture", ["code_trio", "llama_target"])
def test_tree_mask_logits_equal_sequential_path_logits(request, fixture):
    location = request.getfixturevalue(fixture)
    location = location["target"] if isinstance(location, dict) else location
    model = load_causal_lm(location, torch.device("cpu"), torch.float32, "target")
    prefix = [5, 17, 33, 2, 90, 41]
    root = 12
    # root → 0 (20), 1 (21), 2 (22); 0 → 3 (23), 4 (24); 3 → 5 (25); 2 → 6 (26)
    parents = [ROOT, ROOT, ROOT, 0, 0, 3, 2]
    tokens = [20, 21, 22, 23, 24, 25, 26]
    tree = DraftTree(root_token=root, shape=(3, 2, 1))
    for parent, token in zip(parents, tokens):
        tree.add(parent, token, 1.0)

    lm = CachedCausalLM(model, ForwardClock(torch.device("cpu")))
    lm.feed(prefix, list(range(len(prefix))))
    positions = [len(prefix)] + [len(prefix) + depth for depth in tree.depths]
    tree_logits = lm.feed([root] + tokens, positions, ancestor_matrix(parents), tree_start=len(prefix))

    with torch.no_grad():
        for node in range(len(tokens)):
            path = [root] + [tokens[i] for i in tree.path_to(node)]
            sequential = model(torch.tensor([prefix + path])).logits[0, -1]
            torch.testing.assert_close(tree_logits[node + 1], sequential, atol=1e-5, rtol=1e-5)
        root_logits = model(torch.tensor([prefix + [root]])).logits[0, -1]
        torch.testing.assert_close(tree_logits[0], root_logits, atol=1e-5, rtol=1e-5)
