"""Debian's Chromium (/usr/bin/chromium, installed by `make deps`) driven by Playwright, no browser downloaded:
the one launch the browser tests share (`chromium_page`)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# As root on a closed network: no sandbox, and no background connections Chromium would retry.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium_page(width: int = 1500, height: int = 1100) -> Iterator[object]:
    """A Playwright page in a fresh headless Chromium (a temporary profile), closed afterwards."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is missing: `make deps` installs it"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


# -- the maintenance console's page (tests/console, tests/e2e) ---------------------------------------------


def machine_risks(page: object) -> list[float]:
    """The fleet table's risks, top to bottom."""
    return [float(r) for r in page.locator("tr.machine").evaluate_all("rs => rs.map(r => r.dataset.risk)")]


def acknowledge_then_resolve(page: object, alarm: int, key: str, shots: Path, wait_ms: int) -> None:
    """As a technician on the console: acknowledge alarm `alarm` with API key `key`, then resolve it as
    "no fault found"; waits for each state on the page and screenshots both into `shots`."""
    row = page.locator(f'tr.alarm[data-alarm="{alarm}"]')
    page.fill("#actor", "ana")
    page.fill("#api-key", key)
    row.locator('button[data-action="acknowledge"]').click()
    page.locator(f'tr.alarm[data-alarm="{alarm}"][data-state="acknowledged"]').wait_for(timeout=wait_ms)
    page.screenshot(path=str(shots / "2-acknowledged.png"), full_page=True)
    row.locator("select").select_option("no_fault_found")
    row.locator('button[data-action="resolve"]').click()
    try:
        page.wait_for_function(
            f"document.getElementById('message').textContent === 'alarm {alarm}: resolved'", timeout=wait_ms
        )
    except Exception as exc:
        said = page.locator("#message").text_content()
        raise AssertionError(f"alarm {alarm} not resolved on the page; its message: {said!r}") from exc
    page.locator(f'tr.alarm[data-alarm="{alarm}"]').wait_for(state="detached", timeout=wait_ms)
    page.screenshot(path=str(shots / "3-resolved.png"), full_page=True)
