"""Command-line entry point: `python -m mambaviz {generate,train,bench,bench-context}`."""

import argparse
import logging
import sys

from mambaviz.errors import run_with_exit_status


def build_parser() -> argparse.ArgumentParser:
    from mambaviz import bench, cli_generate, train

    parser = argparse.ArgumentParser(prog="python -m mambaviz", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="logging level (DEBUG, INFO, WARNING)")
    commands = parser.add_subparsers(dest="command", required=True)
    cli_generate.add_arguments(commands.add_parser("generate", help="run speculative decoding on one prompt"))
    train.add_arguments(commands.add_parser("train", help="train the bundled models from scratch"))
    bench.add_bench_arguments(commands.add_parser("bench", help="benchmark drafters and tree policies on prompts"))
    bench.add_context_arguments(commands.add_parser("bench-context", help="drafting time and cache bytes against context length"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return run_with_exit_status(args)


if __name__ == "__main__":
    sys.exit(main())
