"""The bundled models in assets/models: they load offline, fast, and keep their size and quality bounds."""

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mambaviz.scan import mamba_training_forward

REPOSITORY = Path(__file__).resolve().parents[1]
MODELS = REPOSITORY / "assets" / "models"
PROMPTS = REPOSITORY / "assets" / "prompts" / "heldout.jsonl"
NAMES = ("target", "mamba", "transformer")

pytestmark = pytest.mark.skipif(
    not all((MODELS / name / "model.safetensors").exists() for name in NAMES),
    reason="bundled weights not in assets/models yet; `python -m mambaviz train` writes them",
)

LOAD_SCRIPT = """
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
started = time.perf_counter()
classes = {}
for folder in sys.argv[1:]:
    classes[folder] = type(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)).__name__
    AutoTokenizer.from_pretrained(folder)
print(json.dumps({"seconds": time.perf_counter() - started, "classes": classes}))
"""


@pytest.fixture(scope="module")
def models():
    return {name: AutoModelForCausalLM.from_pretrained(MODELS / name, dtype=torch.float32).eval() for name in NAMES}


def parameter_count(model):
    return sum(p.numel() for p in model.parameters())


def card_losses(name):
    """Read (train, held-out) losses of every model from the loss table of `name`'s model card.

    Only the loss table has a fourth column (the agreement in percent), which distinguishes it from the estimate table.
    """
    card = (MODELS / name / "README.md").read_text()
    losses = {}
    for match in re.finditer(r"^\| (\w+) \| ([\d.]+) \| ([\d.]+) \| [\d.]+% \|$", card, flags=re.MULTILINE):
        losses[match.group(1)] = (float(match.group(2)), float(match.group(3)))
    return losses


def test_bundled_trio_loads_offline_within_5_seconds():
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    folders = [str(MODELS / name) for name in NAMES]

    completed = subprocess.run(
        [sys.executable, "-c", LOAD_SCRIPT, *folders], env=environment, capture_output=True, text=True, timeout=120, check=True
    )
    result = json.loads(completed.stdout.strip().splitlines()[-1])

    assert result["seconds"] < 5.0
    assert list(result["classes"].values()) == ["GPTNeoXForCausalLM", "MambaForCausalLM", "GPTNeoXForCausalLM"]


def test_bundled_parameter_counts_within_bounds(models):
    target = parameter_count(models["target"])
    mamba = parameter_count(models["mamba"])
    transformer = parameter_count(models["transformer"])

    assert 10_000_000 <= target <= 20_000_000
    assert mamba <= target / 5
    assert transformer <= target / 5
    assert abs(mamba - transformer) <= 0.1 * max(mamba, transformer)


def test_bundled_weights_are_fp16_and_under_45_mb():
    total_bytes = 0
    for name in NAMES:
        folder = MODELS / name
        weights = folder / "model.safetensors"
        header_length = struct.unpack("<Q", weights.read_bytes()[:8])[0]
        header = json.loads(weights.read_bytes()[8 : 8 + header_length])
        dtypes = {entry["dtype"] for key, entry in header.items() if key != "__metadata__"}

        assert dtypes == {"F16"}, f"{name} stores {dtypes}"
        total_bytes += sum(path.stat().st_size for path in folder.iterdir())

    assert total_bytes <= 45_000_000


def test_bundled_tokenizer_shared_and_round_trips(models):
    tokenizers = [AutoTokenizer.from_pretrained(MODELS / name) for name in NAMES]
    prompt = json.loads(PROMPTS.read_text().splitlines()[0])["prompt"]

    assert len({json.dumps(t.get_vocab(), sort_keys=True) for t in tokenizers}) == 1
    for name, tokenizer in zip(NAMES, tokenizers):
        assert tokenizer.decode(tokenizer(prompt)["input_ids"]) == prompt
        assert models[name].config.eos_token_id == tokenizer.eos_token_id
        assert models[name].config.vocab_size == len(tokenizer)


def test_bundled_mamba_chunked_forward_equals_hf(models):
    tokenizer = AutoTokenizer.from_pretrained(MODELS / "mamba")
    prompt = json.loads(PROMPTS.read_text().splitlines()[1])["prompt"]
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"][:, :64]

    with torch.no_grad():
        expected = models["mamba"](input_ids=input_ids).logits
        actual = mamba_training_forward(models["mamba"], input_ids)

    torch.testing.assert_close(actual, expected, atol=1e-4, rtol=1e-4)


def test_bundled_target_beats_drafters_by_015_nats():
    losses = card_losses("target")

    assert losses["target"][1] + 0.15 <= losses["mamba"][1]
    assert losses["target"][1] + 0.15 <= losses["transformer"][1]


def test_bundled_prompts_come_from_heldout_files():
    manifest = json.loads((MODELS / "corpus_manifest.json").read_text())
    heldout_paths = {entry["path"] for entry in manifest["file_list"] if entry["split"] == "heldout"}
    prompts = [json.loads(line) for line in PROMPTS.read_text().splitlines()]

    assert len(prompts) == 200
    for prompt in prompts:
        assert prompt["source"] in heldout_paths
        assert prompt["prompt"].endswith("\n")
