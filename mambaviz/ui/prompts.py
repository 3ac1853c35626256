"""Example prompts for the run panel: held-out code from `assets/prompts/heldout.jsonl` when present."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from mambaviz.models import ASSETS

logger = logging.getLogger(__name__)

HELDOUT_PROMPTS = ASSETS / "prompts" / "heldout.jsonl"
BUILTIN_PROMPTS = [
    "def fibonacci(n):\n    ",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    "import os\n\n\ndef list_python_files(folder):\n    ",
    "for index, line in enumerate(lines):\n    if not line.strip():\n",
]


def example_prompts(path: Path = HELDOUT_PROMPTS, count: int = 8, max_chars: int = 400) -> list[str]:
    """Return up to `count` prompts of at most `max_chars` characters, one per source file.

    Lines are JSON objects with a `prompt` field; malformed lines are skipped. The built-in prompts
    are returned when the file is missing or yields none.
    """
    if not path.is_file():
        return list(BUILTIN_PROMPTS)
    prompts: list[str] = []
    sources: set[str] = set()
    skipped = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
            prompt, source = entry["prompt"], entry.get("source")
        except (json.JSONDecodeError, KeyError, TypeError):
            skipped += 1
            continue
        if not isinstance(prompt, str) or not prompt.strip() or len(prompt) > max_chars or source in sources:
            continue
        sources.add(source)
        prompts.append(prompt)
        if len(prompts) == count:
            break
    if skipped:
        logger.warning("skipped %d malformed lines of %s", skipped, path)
    return prompts or list(BUILTIN_PROMPTS)
