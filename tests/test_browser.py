"""The page in a real browser: Debian's Chromium driven by Playwright against the app on loopback.

Runs a generation, waits for the draft tree plot, walks the steps with the slider and the buttons,
replays a trace whose token is an HTML tag, opens the Compare tab and saves screenshots. Set
MAMBAVIZ_SCREENSHOT_DIR to keep the screenshots; otherwise they go to the test's temporary folder.
"""

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.app_server import serve
from tests.trace_factory import ATTACK, make_step, make_trace

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                reason=f"{CHROMIUM} not found: install Debian's chromium package to run browser tests")


@pytest.fixture(scope="module")
def page(code_trio):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="mambaviz-chromium-")
    with serve(code_trio) as url, sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1400, "height": 1000})
        page = context.new_page()
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#generate")
        yield page
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def screenshot_dir(tmp_path_factory) -> Path:
    folder = os.environ.get("MAMBAVIZ_SCREENSHOT_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def tree_title(page) -> str:
    return page.locator("#tree-plot .gtitle").text_content()


def test_generation_tree_and_step_controls(page, screenshot_dir):
    page.locator("#prompt textarea").fill("def add(a, b):\n    return")
    page.locator("#generate").click()
    page.wait_for_function("document.querySelector('#mambaviz-status').innerText.startsWith('Done')")
    page.wait_for_selector("#tree-plot .main-svg")
    assert page.locator("#output-text [data-origin]").count() == 64
    steps = int(page.locator("#step-slider input[type=number]").input_value())
    assert tree_title(page).startswith(f"Step {steps} of ")

    page.locator("#step-slider input[type=range]").fill("1")
    page.wait_for_function("document.querySelector('#tree-plot .gtitle').textContent.startsWith('Step 1 of')")
    page.get_by_role("button", name="Next ▶").click()
    page.wait_for_function("document.querySelector('#tree-plot .gtitle').textContent.startsWith('Step 2 of')")
    assert page.locator("#step-slider input[type=number]").input_value() == "2"

    page.locator("#play").click()
    page.wait_for_function("document.querySelector('#tree-plot .gtitle').textContent.startsWith('Step 4 of')")
    page.locator("#play").click()
    page.wait_for_function("document.querySelector('#play').innerText.includes('Play')")

    legend = page.locator("#tree-plot .legend").text_content()
    for entry in ("accepted path", "root (last committed token)", "bonus token"):
        assert entry in legend
    page.screenshot(path=str(screenshot_dir / "tree.png"), full_page=True)


def test_replayed_html_token_shows_as_text(page, tmp_path):
    step = make_step(committed_text=[" add", ATTACK, "x"])
    step.nodes[4].text = '"a" & b'
    trace = make_trace([step], prompt="def")
    path = tmp_path / "attack.json"
    trace.save(path)
    with page.expect_file_chooser() as chooser:
        page.locator("#replay-trace").click()
    chooser.value.set_files(str(path))
    page.wait_for_function("document.querySelector('#mambaviz-status').innerText.startsWith('Replaying')")
    page.wait_for_function("document.querySelector('#tree-plot .gtitle').textContent.startsWith('Step 1 of 1')")

    assert page.locator('img[src="x"]').count() == 0
    assert ATTACK in page.locator("#output-text").inner_text()
    labels = page.locator("#tree-plot .textpoint").all_text_contents()
    assert "<img␣src=x␣…" in labels
    assert '"a"␣&␣b' in labels

    # Traces are drawn in the order edges, accepted path, root, accepted, rejected, unvisited, bonus.
    # The first unvisited point is node 1, whose token is the tag.
    point = page.locator("#tree-plot .scatterlayer .trace").nth(5).locator(".point").first
    box = point.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.wait_for_selector("#tree-plot .hoverlayer .hovertext")
    hover = page.locator("#tree-plot .hoverlayer").text_content()
    assert "<img␣src=x␣onerror=alert(1)>" in hover
    assert "decision: not tried" in hover
    assert page.locator('img[src="x"]').count() == 0


def test_compare_tab_runs_three_drafters(page, screenshot_dir):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-run").click()
    page.wait_for_function("document.querySelector('#compare-status').innerText.startsWith('Done')",
                           timeout=120_000)
    table = page.locator("#compare-table").inner_text()
    for run in ("Mamba drafter", "Transformer drafter", "target alone"):
        assert run in table
    assert "identical" in page.locator("#greedy-check").inner_text()
    page.screenshot(path=str(screenshot_dir / "compare.png"), full_page=True)
