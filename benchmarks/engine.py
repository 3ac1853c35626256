"""Engine benchmark: bookkeeping share of step time, and drafting cost against context length.

    python -m benchmarks.engine --preset bundled --lengths 128,2048

Prints, for the Mamba and Transformer drafters, drafting ms per drafted token and drafter cache
bytes at each context length with the longest-to-shortest ratio, and the share of step time the
engine spends outside model forward passes. All figures come from one process, measured side by
side; read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mambaviz.benchmark import bookkeeping_share, context_sweep, growth_ratios
from mambaviz.cli_generate import add_model_arguments
from mambaviz.errors import MambavizError
from mambaviz.models import load_model_set
from mambaviz.tree import parse_shape

DEFAULT_PROMPTS = [
    "def parse_header(line):\n    \"\"\"Split a header line into name and value.\"\"\"\n",
    "class Cache:\n    def __init__(self, size):\n        self.size = size\n",
    "import os\n\n\ndef list_files(path):\n",
    "for index, item in enumerate(items):\n",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(parser)
    parser.add_argument("--lengths", default="128,2048", help="context lengths in tokens, comma-separated")
    parser.add_argument("--tree", default="3,2,2,1,1", help="tree shape drafted at each length")
    parser.add_argument("--repeats", type=int, default=20, help="trees drafted per drafter and length")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens per prompt for the bookkeeping runs")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        lengths = [int(length) for length in args.lengths.split(",")]
        shape = parse_shape(args.tree)
        models = load_model_set(args.preset, args.target, args.mamba, args.transformer, args.device)
        points = context_sweep(models, lengths, shape=shape, repeats=args.repeats)
        shares = {name: bookkeeping_share(models, DEFAULT_PROMPTS, name, shape, args.max_new_tokens)
                  for name in ("mamba", "transformer", "none")}
    except (MambavizError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    print(f"{'component':<12} {'context':>8} {'ms/token':>9} {'cache bytes':>12}")
    for point in sorted(points, key=lambda p: (p.component, p.context_length)):
        print(f"{point.component:<12} {point.context_length:>8} {point.ms_per_token:>9.3f} {point.cache_bytes:>12}")
    ratios = growth_ratios(points)
    print(f"\nms/token at {lengths[-1]} ÷ at {lengths[0]}: " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
    print("bookkeeping share of step time: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items()))
    if args.json:
        figures = {"points": [vars(p) for p in points], "growth_ratios": ratios, "bookkeeping_share": shares}
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
