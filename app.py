"""Serve the mambaviz explorer: `python app.py` (Hugging Face Spaces runs this file too).

Binds 127.0.0.1:7860 unless GRADIO_SERVER_NAME / GRADIO_SERVER_PORT set another address, and creates a
public share link only with --share or GRADIO_SHARE=true.
"""

import argparse
import logging

from mambaviz.ui import AppConfig, build_app, launch


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="bundled", help="models loaded at start: bundled or pythia")
    parser.add_argument("--target", help="target to load at start instead of the preset's: hub id or folder")
    parser.add_argument("--mamba", help="Mamba drafter to load at start: hub id or folder")
    parser.add_argument("--transformer", help="Transformer drafter to load at start: hub id or folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    parser.add_argument("--concurrency", type=int, default=1,
                        help="generations and comparisons run at once across all users (default 1)")
    parser.add_argument("--share", action="store_true", default=None, help="create a public Gradio share link")
    parser.add_argument("--log-level", default="INFO", help="logging level (DEBUG, INFO, WARNING)")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_arguments()
    logging.basicConfig(level=arguments.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo = build_app(AppConfig(preset=arguments.preset, target=arguments.target, mamba=arguments.mamba,
                               transformer=arguments.transformer, device=arguments.device,
                               concurrency=arguments.concurrency))
    launch(demo, share=arguments.share)
