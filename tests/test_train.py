"""The training pipeline: corpus split, prompts, tokenizer, and a tiny run of all three model classes."""

import json
import math
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GPTNeoXForCausalLM, MambaForCausalLM

from mambaviz import corpus
from mambaviz.bundle import greedy_accepted_length
from mambaviz.__main__ import main
from mambaviz.scan import mamba_training_forward

TINY_VOCAB = 320


def test_split_depends_only_on_path():
    paths = [f"package/module_{index}.py" for index in range(400)]

    first = [corpus.split_of(path) for path in paths]
    second = [corpus.split_of(path) for path in reversed(paths)][::-1]

    assert first == second
    assert set(first) == {"train", "heldout"}
    assert 5 <= first.count("heldout") <= 40  # about 5% of 400


def test_read_stdlib_skips_site_packages(tmp_path):
    (tmp_path / "site-packages").mkdir()
    (tmp_path / "site-packages" / "vendored.py").write_text("x = 1\n")
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "decoder.py").write_text("y = 2\n")
    (tmp_path / "latin.py").write_bytes(b"z = '\xe9'\n")

    files = corpus.read_stdlib(tmp_path)

    assert [f.path for f in files] == ["json/decoder.py"]
    assert files[0].size_bytes == 6


def test_extract_prompts_end_with_header_line():
    text = "import os\n\nX = 1\n\n\nclass Reader:\n    def read(self, path):\n        return open(path).read()\n"
    files = [corpus.SourceFile("reader.py", text, len(text), "0" * 64, "heldout")]

    prompts = corpus.extract_prompts(files, count=2, context_lines=2)

    assert [p["source"] for p in prompts] == ["reader.py", "reader.py"]
    assert prompts[0]["prompt"] == "\n\nclass Reader:\n"
    assert prompts[1]["prompt"] == "\nclass Reader:\n    def read(self, path):\n"


def test_extract_prompts_rejects_too_few_headers():
    files = [corpus.SourceFile("a.py", "def f():\n    pass\n", 18, "0" * 64, "heldout")]

    with pytest.raises(ValueError, match="fewer than 3"):
        corpus.extract_prompts(files, count=3)


def test_tokenizer_round_trip():
    texts = ["def add(a, b):\n    return a + b\n", "class Café:\n\tpass  # naïve ünïcode\n"] * 20
    tokenizer = corpus.train_tokenizer(texts, vocab_size=300)
    samples = ["def add(a, b):\n    return a + b\n", "\t\tx = '€ 😀'\r\n", "    \n\n", "never seen: ©®"]

    for sample in samples:
        ids = tokenizer(sample)["input_ids"]
        assert tokenizer.decode(ids) == sample

    assert tokenizer.eos_token == corpus.EOS_TOKEN
    assert tokenizer.convert_tokens_to_ids(corpus.EOS_TOKEN) == tokenizer.eos_token_id


def test_encode_files_ends_each_file_with_eos():
    tokenizer = corpus.train_tokenizer(["a = 1\n", "b = 2\n"] * 10, vocab_size=280)

    stream = corpus.encode_files(tokenizer, ["a = 1\n", "b = 2\n"])

    eos_positions = [index for index, token in enumerate(stream) if token == tokenizer.eos_token_id]
    assert eos_positions[-1] == len(stream) - 1
    assert len(eos_positions) == 2
    assert tokenizer.decode(stream[: eos_positions[0]].tolist()) == "a = 1\n"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run `python -m mambaviz train --size tiny` once for all tests below."""
    root = tmp_path_factory.mktemp("tiny_run")
    argv = [
        "train", "--size", "tiny", "--output", str(root / "models"), "--checkpoints", str(root / "checkpoints"),
        "--prompts", str(root / "prompts.jsonl"), "--precision", "fp32",
    ]
    started = time.perf_counter()
    status = main(argv)
    return {"root": root, "argv": argv, "status": status, "seconds": time.perf_counter() - started}


def test_tiny_run_exits_zero(tiny_run):
    assert tiny_run["status"] == 0


@pytest.mark.parametrize(
    ("name", "model_class"),
    [("target", GPTNeoXForCausalLM), ("mamba", MambaForCausalLM), ("transformer", GPTNeoXForCausalLM)],
)
def test_tiny_run_models_load_in_fp32(tiny_run, name, model_class):
    folder = tiny_run["root"] / "models" / name

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())

    assert type(model) is model_class
    assert next(model.parameters()).dtype == torch.float32
    assert config["dtype"] == "float16"
    assert model.config.eos_token_id == tokenizer.eos_token_id
    assert model.config.bos_token_id == tokenizer.bos_token_id
    assert len(tokenizer) == TINY_VOCAB


@pytest.mark.parametrize("name", ["target", "mamba", "transformer"])
def test_tiny_run_losses_below_uniform(tiny_run, name):
    # A model that predicts the uniform distribution scores ln(vocab) nats per token.
    card = (tiny_run["root"] / "models" / name / "README.md").read_text()
    row = next(line for line in card.splitlines() if line.startswith(f"| {name} |"))
    train_loss, heldout_loss = (float(cell) for cell in row.strip("|").split("|")[1:3])

    assert math.isfinite(heldout_loss)
    assert train_loss < math.log(TINY_VOCAB)


def test_tiny_run_card_states_data_and_training(tiny_run):
    card = (tiny_run["root"] / "models" / "mamba" / "README.md").read_text()
    manifest = json.loads((tiny_run["root"] / "models" / "corpus_manifest.json").read_text())

    assert manifest["sha256"] in card
    assert "Parameters:" in card
    assert "Tokens seen:" in card
    assert "Wall time" in card
    assert "KL(target || drafter)" in card
    assert "## Speculative decoding on held-out prompts" in card


def test_tiny_run_writes_manifest_and_prompts(tiny_run):
    manifest = json.loads((tiny_run["root"] / "models" / "corpus_manifest.json").read_text())
    prompts = [json.loads(line) for line in (tiny_run["root"] / "prompts.jsonl").read_text().splitlines()]
    heldout_paths = {entry["path"] for entry in manifest["file_list"] if entry["split"] == "heldout"}

    assert manifest["files"] == 60
    assert manifest["splits"]["train"]["files"] + manifest["splits"]["heldout"]["files"] == 60
    assert len(prompts) == 5
    for prompt in prompts:
        assert prompt["source"] in heldout_paths
        assert prompt["prompt"].endswith(":\n")


def test_tiny_run_mamba_chunked_forward_equals_hf(tiny_run):
    model = AutoModelForCausalLM.from_pretrained(tiny_run["root"] / "models" / "mamba", dtype=torch.float32).eval()
    input_ids = torch.randint(0, TINY_VOCAB, (1, 70), generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        torch.testing.assert_close(mamba_training_forward(model, input_ids), model(input_ids=input_ids).logits, atol=1e-4, rtol=1e-4)


def test_tiny_run_resumes_without_training(tiny_run):
    weights = tiny_run["root"] / "models" / "target" / "model.safetensors"
    before = weights.read_bytes()

    started = time.perf_counter()
    status = main(tiny_run["argv"])

    assert status == 0
    assert weights.read_bytes() == before
    assert time.perf_counter() - started < tiny_run["seconds"]


@pytest.mark.parametrize(
    ("option", "value"),
    [("--distill-weight", "1.5"), ("--target-tokens", "10"), ("--max-files", "3"), ("--checkpoint-minutes", "0")],
)
def test_invalid_option_exits_with_status_2(tmp_path, capsys, option, value):
    argv = ["train", "--size", "tiny", "--checkpoints", str(tmp_path / "checkpoints"), "--output", str(tmp_path / "models"), option, value]

    assert main(argv) == 2
    assert value in capsys.readouterr().err


@pytest.mark.parametrize(
    ("ranks", "tree_shape", "expected"),
    [
        # Chain of 5: positions 0-1 accepted, rank 1 at position 2 rejected and replaced by the bonus token,
        # then the last 4 positions accepted with no room left for a bonus token.
        ([0, 0, 1, 0, 0, 0, 0], (1, 1, 1, 1, 1), (7, 2)),
        # The tree keeps the rank-1 token at depth 3 (3 children at depth 1, 2 at depths 2 and 3).
        ([0, 0, 1, 0, 0, 0, 0], (3, 2, 2, 1, 1), (7, 2)),
        ([2, 1, 1, 3, 0, 0], (3, 2, 2, 1, 1), (6, 2)),
        ([2, 1, 1, 3, 0, 0], (1, 1, 1, 1, 1), (6, 5)),
        ([5, 5, 5], (1, 1, 1, 1, 1), (3, 3)),
    ],
)
def test_greedy_accepted_length_walks_steps(ranks, tree_shape, expected):
    assert greedy_accepted_length(torch.tensor(ranks), tree_shape) == expected
