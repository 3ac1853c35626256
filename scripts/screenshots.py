"""Take the README's screenshots from the running app: `python -m scripts.screenshots`.

Serves the app on a free loopback port with the bundled models, or the given ones, and drives
Debian's Chromium through Playwright. It writes `tree.png`, a step with a long accepted path, and
`compare.png`, the Compare tab after a run, into `assets/screenshots/`.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
from pathlib import Path

from mambaviz.ui import AppConfig, build_app, launch

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OUTPUT = Path(__file__).resolve().parent.parent / "assets" / "screenshots"


def bottom_of(page, selector: str) -> float:
    box = page.locator(selector).bounding_box()
    return box["y"] + box["height"]


def show_long_step(page, min_accepted: int, max_steps: int = 80) -> None:
    """Show the first step whose accepted length reaches `min_accepted`, else the longest one seen."""
    slider = page.locator("#step-slider input[type=range]")
    count = min(int(slider.get_attribute("max")), max_steps)
    best_position, best_length = 1, -1
    for position in range(1, count + 1):
        show_step(page, position)
        match = re.search(r"accepted length (\d+)", page.locator("#tree-plot .gtitle").text_content())
        length = int(match.group(1)) if match else 0
        if length >= min_accepted:
            return
        if length > best_length:
            best_position, best_length = position, length
    show_step(page, best_position)


def show_step(page, position: int) -> None:
    page.locator("#step-slider input[type=range]").fill(str(position))
    page.wait_for_function("(prefix) => document.querySelector('#tree-plot .gtitle').textContent.startsWith(prefix)",
                           arg=f"Step {position} of")


def take(url: str, output: Path, prompt: str | None, min_accepted: int) -> None:
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="mambaviz-chromium-")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
        page = context.new_page()
        page.set_default_timeout(180_000)
        page.goto(url)
        page.wait_for_selector("#generate")
        if prompt:
            page.locator("#prompt textarea").fill(prompt)

        page.locator("#generate").click()
        page.wait_for_function("document.querySelector('#mambaviz-status').innerText.startsWith('Done')")
        page.wait_for_selector("#tree-plot .main-svg")
        show_long_step(page, min_accepted)
        page.wait_for_timeout(500)
        page.screenshot(path=str(output / "tree.png"), full_page=True,
                        clip={"x": 0, "y": 0, "width": 1400, "height": bottom_of(page, "#step-details") + 20})

        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-run").click()
        page.wait_for_function("document.querySelector('#compare-status').innerText.startsWith('Done')")
        page.wait_for_timeout(500)
        status = page.locator("#mambaviz-status").bounding_box()
        left, top = status["x"] - 10, status["y"] - 10
        page.screenshot(path=str(output / "compare.png"), full_page=True,
                        clip={"x": left, "y": top, "width": 1400 - left,
                              "height": bottom_of(page, "#greedy-check") + 520 - top})
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="bundled", help="model preset to serve (default bundled)")
    parser.add_argument("--target", help="target hub id or folder instead of the preset's")
    parser.add_argument("--mamba", help="Mamba drafter hub id or folder instead of the preset's")
    parser.add_argument("--transformer", help="Transformer drafter hub id or folder instead of the preset's")
    parser.add_argument("--prompt", help="prompt to type in place of the first example prompt")
    parser.add_argument("--min-accepted", type=int, default=4,
                        help="show the first step whose accepted length reaches this many tokens")
    parser.add_argument("--output", type=Path, default=OUTPUT, help="folder for tree.png and compare.png")
    arguments = parser.parse_args()
    logging.basicConfig(level="INFO", format="%(levelname)s %(name)s: %(message)s")

    arguments.output.mkdir(parents=True, exist_ok=True)
    demo = build_app(AppConfig(preset=arguments.preset, target=arguments.target, mamba=arguments.mamba,
                               transformer=arguments.transformer, device="cpu"))
    _, url, _ = launch(demo, server_name="127.0.0.1", server_port=None, share=False, prevent_thread_lock=True,
                       quiet=True)
    try:
        take(url, arguments.output, arguments.prompt, arguments.min_accepted)
    finally:
        demo.close()
    logging.getLogger(__name__).info("screenshots written to %s", arguments.output)


if __name__ == "__main__":
    main()
