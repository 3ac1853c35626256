"""The training corpus of the bundled models: the running interpreter's standard library source.

Every Python installation carries it, so the pipeline needs no download. Files are split into train and
held-out by a hash of their path relative to the standard library folder, so the split does not
depend on the file order or on the machine. Held-out files give the held-out loss and the example
prompts; the tokenizer and the models never see them during training.
"""

import hashlib
import json
import logging
import random
import re
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

EOS_TOKEN = "<|endoftext|>"
HELDOUT_PERCENT = 5
EXCLUDED_FOLDERS = {"site-packages", "dist-packages", "__pycache__"}

# A function or class header at any indentation, e.g. "    async def fetch(self, url):".
HEADER_PATTERN = re.compile(r"^\s*(async\s+def|def|class)\s+\w+")


@dataclass(frozen=True)
class SourceFile:
    """One standard library file: its path relative to the library folder, its text and its split."""

    path: str
    text: str
    size_bytes: int
    sha256: str
    split: str  # "train" or "heldout"


def stdlib_folder() -> Path:
    """Return the folder of the running interpreter's pure-Python standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def split_of(relative_path: str, heldout_percent: int = HELDOUT_PERCENT) -> str:
    """Assign a file to "train" or "heldout" from the SHA-256 of its relative path."""
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") % 100
    return "heldout" if bucket < heldout_percent else "train"


def read_stdlib(folder: Path | None = None, heldout_percent: int = HELDOUT_PERCENT) -> list[SourceFile]:
    """Read every `.py` file under `folder` (default: the running standard library), sorted by path.

    Files under site-packages, dist-packages or __pycache__ are skipped, and so are the few test files
    that are not valid UTF-8 (they exist to test source encodings).
    """
    folder = folder or stdlib_folder()
    files = []
    skipped = 0
    for path in sorted(folder.rglob("*.py")):
        relative = path.relative_to(folder)
        if EXCLUDED_FOLDERS.intersection(relative.parts) or not path.is_file():
            continue
        data = path.read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        relative_text = relative.as_posix()
        files.append(
            SourceFile(
                path=relative_text,
                text=text,
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                split=split_of(relative_text, heldout_percent),
            )
        )
    logger.info("read %d standard library files from %s (%d not UTF-8, skipped)", len(files), folder, skipped)
    return files


def build_manifest(files: list[SourceFile], folder: Path | None = None) -> dict:
    """Describe the corpus so that a reader can check that a rebuild used the same files.

    `sha256` covers the sorted list of (path, split, file SHA-256) lines, so it changes when any file's
    content, presence or split changes.
    """
    listing = "".join(f"{f.path}\t{f.split}\t{f.sha256}\n" for f in files)
    splits = {}
    for split in ("train", "heldout"):
        members = [f for f in files if f.split == split]
        splits[split] = {"files": len(members), "bytes": sum(f.size_bytes for f in members)}
    return {
        "source": "Python standard library (.py files, site-packages excluded)",
        "python_version": sys.version.split()[0],
        "stdlib_folder": str(folder or stdlib_folder()),
        "files": len(files),
        "bytes": sum(f.size_bytes for f in files),
        "splits": splits,
        "sha256": hashlib.sha256(listing.encode("utf-8")).hexdigest(),
        "file_list": [{"path": f.path, "split": f.split, "bytes": f.size_bytes, "sha256": f.sha256} for f in files],
    }


def extract_prompts(
    files: list[SourceFile],
    count: int = 200,
    context_lines: int = 6,
    max_chars: int = 1200,
    seed: int = 0,
) -> list[dict]:
    """Cut `count` prompts from held-out files: up to `context_lines` lines, then a def or class header.

    Each prompt ends with the header line and its newline, so the model continues with the body. Prompts
    are drawn without replacement from all headers of held-out files with a seeded RNG, then sorted by
    source path and line so the file reads in a stable order.

    Raises:
        ValueError: when the held-out files contain fewer than `count` headers.
    """
    candidates = []
    for source in files:
        if source.split != "heldout":
            continue
        lines = source.text.splitlines(keepends=True)
        for index, line in enumerate(lines):
            if not HEADER_PATTERN.match(line) or not line.rstrip().endswith(":"):
                continue
            prompt = "".join(lines[max(0, index - context_lines) : index + 1])
            if not prompt.endswith("\n"):
                prompt += "\n"
            if len(prompt) <= max_chars:
                candidates.append((source.path, index, prompt))
    if len(candidates) < count:
        raise ValueError(f"held-out files contain {len(candidates)} def or class headers, fewer than {count}")

    chosen = sorted(random.Random(seed).sample(candidates, count))
    return [{"prompt": prompt, "source": path} for path, _, prompt in chosen]


def write_prompts(prompts: list[dict], path: Path) -> None:
    """Write prompts as JSON Lines: one `{"prompt": ..., "source": ...}` object per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for prompt in prompts:
            handle.write(json.dumps(prompt, ensure_ascii=False) + "\n")


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (the GPT-2 scheme) with `EOS_TOKEN` as its only special token.

    Byte-level means every byte sequence encodes, and decoding returns the original text exactly.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=None,
        pad_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
    )


def encode_files(tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> np.ndarray:
    """Encode texts into one token stream, each text followed by the EOS token.

    Returns a uint16 array, so the vocabulary must stay below 65,536 tokens.
    """
    if len(tokenizer) > np.iinfo(np.uint16).max:
        raise ValueError(f"vocabulary of {len(tokenizer)} tokens does not fit uint16 token ids")
    eos_id = tokenizer.eos_token_id
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    pieces = []
    for encoding in encodings:
        pieces.append(np.asarray(encoding.ids, dtype=np.uint16))
        pieces.append(np.asarray([eos_id], dtype=np.uint16))
    return np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.uint16)
