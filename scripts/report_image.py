"""Save a figure of a benchmark's HTML report as a PNG: `python -m scripts.report_image REPORT OUT.png`.

Opens the self-contained report written by `python -m mambaviz bench` or `bench-context` in Debian's
Chromium through Playwright and screenshots its N-th Plotly figure (the first by default), so the
README's pictures come from the same report a user gets.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from scripts.screenshots import CHROMIUM, CHROMIUM_ARGS


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path, help="report.html written by bench or bench-context")
    parser.add_argument("output", type=Path, help="PNG file to write")
    parser.add_argument("--figure", type=int, default=0, help="0-based index of the figure to save")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: report {args.report} not found.", file=sys.stderr)
        return 2

    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="mambaviz-chromium-")
    try:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1000, "height": 700})
            page = context.new_page()
            page.goto(args.report.resolve().as_uri())
            figure = page.locator(".plotly-graph-div").nth(args.figure)
            figure.wait_for(state="visible", timeout=30_000)
            figure.screenshot(path=str(args.output))
            context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
