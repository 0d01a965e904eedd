"""The Dagster UI of the stack in a real browser: Debian's Chromium (/usr/bin/chromium, installed by
`make deps`) driven by Playwright, no browser downloaded. The asset graph shows every group; the latest
materialization of candidate_model shows its score table and its plot. Screenshots go to the test's
output folder (pytest's tmp_path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from browser import chromium_page
from stack_helpers import Pipeline, RunningStack

pytestmark = pytest.mark.integration

GROUPS = ("ingestion", "preparation", "augmentation", "quality", "training", "serving", "detection")
WAIT_MS = 120_000  # a busy 2-core machine lays out the graph slowly


@pytest.fixture
def page() -> Iterator[object]:
    with chromium_page(1600, 1200) as opened:
        yield opened


def _open(page: object, running: RunningStack, path: str) -> None:
    page.goto(
        f"http://127.0.0.1:{running.stack.ports.dagster}{path}", wait_until="networkidle", timeout=WAIT_MS
    )
    _dismiss(page, wait_ms=5_000)


def _dismiss(page: object, wait_ms: int = 0) -> None:
    """Close the first-visit dialogs (newsletter "Skip", announcements) that can cover the page; they may
    appear a while after the page loads, so this runs again before each click."""
    if wait_ms:
        try:
            page.get_by_role("button", name="Skip").wait_for(timeout=wait_ms)
        except Exception:  # noqa: BLE001 - not shown this time
            pass
    for name in ("Skip", "Dismiss", "Close"):
        for button in page.get_by_role("button", name=name).all():
            if button.is_visible():
                button.click()
    page.keyboard.press("Escape")


def test_asset_graph_shows_every_group(
    page: object, running_stack: RunningStack, pipeline: Pipeline, tmp_path: Path
) -> None:
    _open(page, running_stack, "/asset-groups")
    for group in GROUPS:
        # The group's box in the graph and its entry in the sidebar.
        page.locator(f'text="{group}" >> visible=true').nth(1).wait_for(timeout=WAIT_MS)
    page.screenshot(path=str(tmp_path / "asset-graph.png"))
    assert (tmp_path / "asset-graph.png").stat().st_size > 0


def test_latest_materialization_shows_its_table_and_plot(
    page: object, running_stack: RunningStack, pipeline: Pipeline, tmp_path: Path
) -> None:
    _open(page, running_stack, "/assets/candidate_model")
    scores = page.locator("tr", has_text="holdout_scores").first
    scores.wait_for(timeout=WAIT_MS)
    table = scores.locator("table").first
    table.wait_for(timeout=WAIT_MS)
    assert "pr_auc" in table.inner_text()
    page.screenshot(path=str(tmp_path / "candidate-model.png"))
    # Typed columns (Dagster table metadata with a schema), numbers rounded to 4 significant digits.
    assert table.locator("th").first.inner_text().strip() != ""
    cells = [c.strip() for c in table.locator("td").all_inner_texts()]
    numbers = [c for c in cells if c.replace(".", "", 1).isdigit()]
    assert numbers and all(len(c.replace(".", "").lstrip("0")) <= 4 for c in numbers), cells
    _dismiss(page)
    page.locator("tr", has_text="confusion_matrix").first.get_by_text("Show Markdown").click()
    # the dialog holding the plot (a first-visit dialog may open late beside it)
    dialog = page.get_by_role("dialog").filter(has=page.locator("img[src^='data:image/png']")).last
    plot = dialog.locator("img[src^='data:image/png']").first
    plot.wait_for(timeout=WAIT_MS)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=plot.element_handle())
    assert plot.evaluate("img => img.naturalWidth") > 100
    # The dialog opens with a scale transition: measure once the drawn width equals the laid-out one.
    page.wait_for_function(
        "img => Math.abs(img.getBoundingClientRect().width - img.offsetWidth) < 0.5",
        arg=plot.element_handle(),
    )
    # Rendered whole: the image inside the dialog's box, at (or scaled to) its full width, nothing to scroll.
    box, frame = plot.bounding_box(), dialog.bounding_box()
    assert box and frame
    assert frame["x"] - 1 <= box["x"] and box["x"] + box["width"] <= frame["x"] + frame["width"] + 1, (
        box,
        frame,
    )
    # The width the image may take: its container's content box (the dialog's padding is not available).
    room = plot.evaluate(
        "img => { const p = img.parentElement, s = getComputedStyle(p);"
        " return p.clientWidth - parseFloat(s.paddingLeft) - parseFloat(s.paddingRight); }"
    )
    assert box["width"] >= 0.99 * min(plot.evaluate("img => img.naturalWidth"), room), (box, room)
    assert dialog.evaluate(
        "d => [d, ...d.querySelectorAll('*')].every(e => e.scrollWidth <= e.clientWidth + 1 || "
        "getComputedStyle(e).overflowX === 'visible')"
    )
    page.screenshot(path=str(tmp_path / "confusion-matrix.png"))
