"""Tiny random models saved with `save_pretrained` into temporary folders, shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MambaConfig,
    MambaForCausalLM,
    PreTrainedTokenizerFast,
)

from mambaviz.models import load_model_set

# Tiny models gain nothing from intra-op threads, and idle threads spinning slow down other processes.
torch.set_num_threads(1)

EOS = "<|endoftext|>"
CODE_SAMPLES = [
    "def add(a, b):\n    return a + b\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "for item in items:\n    if item is None:\n        continue\n    print(item)\n",
    "import os\nimport sys\n\npath = os.path.join(base, name)\n",
]


def byte_level_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on a few lines of code."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CODE_SAMPLES * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS)


def word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over `words` (plus EOS at id 0): a tiny vocabulary for statistical tests."""
    vocab = {EOS: 0, **{word: index + 1 for index, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS)


def save_trio(folder: Path, tokenizer, seed: int = 0, context: int = 512) -> dict[str, str]:
    """Save a random GPT-NeoX target, Mamba drafter and GPT-NeoX drafter sharing `tokenizer`."""
    torch.manual_seed(seed)
    vocab = len(tokenizer)
    trio = {
        "target": GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=context, eos_token_id=0)),
        "mamba": MambaForCausalLM(MambaConfig(
            vocab_size=vocab, hidden_size=16, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4)),
        "transformer": GPTNeoXForCausalLM(GPTNeoXConfig(
            vocab_size=vocab, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=context)),
    }
    paths = {}
    for role, model in trio.items():
        path = folder / role
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[role] = str(path)
    return paths


@pytest.fixture(scope="session")
def code_trio(tmp_path_factory) -> dict[str, str]:
    """Folders of a tiny trio with a ~300-token byte-level BPE vocabulary."""
    return save_trio(tmp_path_factory.mktemp("code_trio"), byte_level_tokenizer())


def load_trio(paths: dict[str, str]):
    """Load a saved trio on the CPU with both drafters ready."""
    models = load_model_set(None, **paths, device="cpu")
    models.drafter_model("mamba")
    models.drafter_model("transformer")
    return models


@pytest.fixture(scope="session")
def code_models(code_trio):
    return load_trio(code_trio)


@pytest.fixture(scope="session")
def small_vocab_trio(tmp_path_factory) -> dict[str, str]:
    """Folders of a tiny trio over 7 words plus EOS, where drafters often match the target."""
    tokenizer = word_tokenizer(["a", "b", "c", "d", "e", "f", "g"])
    return save_trio(tmp_path_factory.mktemp("small_vocab_trio"), tokenizer, seed=1)


@pytest.fixture(scope="session")
def small_vocab_models(small_vocab_trio):
    return load_trio(small_vocab_trio)


@pytest.fixture(scope="session")
def llama_target(tmp_path_factory) -> str:
    torch.manual_seed(2)
    tokenizer = byte_level_tokenizer()
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256))
    path = tmp_path_factory.mktemp("llama") / "target"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def greedy_reference(model, prompt_ids: list[int], new_tokens: int, vocab_size: int, eos: int | None = None):
    """The target's own greedy decoding, recomputing the full sequence each token (no cache)."""
    sequence = list(prompt_ids)
    with torch.no_grad():
        for _ in range(new_tokens):
            logits = model(torch.tensor([sequence])).logits[0, -1, :vocab_size]
            sequence.append(int(logits.argmax()))
            if sequence[-1] == eos:
                break
    return sequence[len(prompt_ids):]
