"""The maintenance console and Prometheus on the production stack (issue 26's "Done when").

- In Debian's Chromium (Playwright, tests/browser.py), with a new file's readings flowing through the
  sensors, prediction_job and its alarms: the console lists the machines by risk, an alarm is acknowledged
  and resolved with the stack's API key, and the outcome is stored as a maintenance record. Screenshots in
  the test's tmp_path.
- Detection stalled (the Dagster daemon held down while readings arrive): the stack's Prometheus, which
  scrapes the console's /metrics with deploy/prometheus/alerts.yml loaded, fires MfdDetectionLag; once the
  daemon is back the readings are scored and the alert clears."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from browser import acknowledge_then_resolve, chromium_page, machine_risks
from stack_helpers import ROWS_PER_FILE, Pipeline, RunningStack, generate

pytestmark = pytest.mark.integration

WAIT_MS = 120_000  # a busy 2-core machine
UNSCORED = (
    "SELECT count(*) FROM readings r WHERE NOT EXISTS (SELECT 1 FROM predictions p WHERE p.reading_id = r.id)"
)


@pytest.fixture
def page() -> Iterator[object]:
    with chromium_page() as opened:
        yield opened


def _flowing(running: RunningStack) -> int:
    """A new file of readings (starting now) through the sensors, prediction_job and alarms; the highest
    reading id the alarms took in, once every reading is scored and taken."""
    before = running.scalar("SELECT coalesce(max(id), 0) FROM readings")
    added = generate(
        running, ROWS_PER_FILE // 3, 21, "--start", datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    newest = running.wait(
        lambda: (
            running.scalar(f"SELECT count(*) FROM readings WHERE id > {before}") == added
            and running.scalar(UNSCORED) == 0
            and running.scalar(
                f"SELECT max(last_reading_id) FROM machine_risk WHERE last_reading_id > {before}"
            )
        ),
        f"the new file's {added} readings scored and taken into machine_risk by prediction_job's alarms",
        timeout=300,
    )
    return int(newest)


def test_console_on_the_stack_in_a_browser(
    page: object, running_stack: RunningStack, pipeline: Pipeline, tmp_path: Path
) -> None:
    running = running_stack
    running.wait(running.stack.console_ready, "the stack's console", timeout=120)
    _flowing(running)
    machines = running.scalar("SELECT count(*) FROM machine_risk")
    alarm = running.wait(
        lambda: running.scalar("SELECT id FROM alarms WHERE state = 'open' ORDER BY peak_risk DESC LIMIT 1"),
        "an open alarm from the scored readings",
        timeout=60,
    )
    page.goto(running.env["MFD_CONSOLE_URL"], wait_until="load", timeout=WAIT_MS)
    page.locator(f'tr.alarm[data-alarm="{alarm}"]').wait_for(timeout=WAIT_MS)
    risks = machine_risks(page)
    assert len(risks) == machines >= 10 and risks == sorted(risks, reverse=True), risks
    page.screenshot(path=str(tmp_path / "1-fleet.png"), full_page=True)

    page.fill("#api-key", "not-the-key")
    page.locator(f'tr.alarm[data-alarm="{alarm}"] button[data-action="acknowledge"]').click()
    page.wait_for_function(
        f"document.getElementById('message').textContent.startsWith('alarm {alarm}: 401')", timeout=WAIT_MS
    )
    acknowledge_then_resolve(page, alarm, running.env["MFD_API_KEYS"].split(",")[0], tmp_path, WAIT_MS)

    assert running.scalar(f"SELECT state FROM alarms WHERE id = {alarm}") == "resolved"
    record = running.scalar(
        "SELECT m.machine_id || ' ' || m.outcome FROM maintenance_records m JOIN alarms a"
        f" ON a.machine_id = m.machine_id WHERE m.work_order_id = 'alarm-{alarm}' AND a.id = {alarm}"
    )
    machine = running.scalar(f"SELECT machine_id FROM alarms WHERE id = {alarm}")
    assert record == f"{machine} no_fault"
    for name in ("1-fleet.png", "2-acknowledged.png", "3-resolved.png"):
        assert (tmp_path / name).stat().st_size > 0


def _alerts(prometheus: str) -> dict[str, str]:
    """alert name -> state, from Prometheus' /api/v1/alerts."""
    found = httpx.get(f"{prometheus}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
    return {a["labels"]["alertname"]: a["state"] for a in found}


def _firing(running: RunningStack, prometheus: str) -> bool:
    """True once MfdDetectionLag fires; else raises what Prometheus sees (the wait's reason on timeout)."""
    alerts = _alerts(prometheus)
    if alerts.get("MfdDetectionLag") == "firing":
        return True
    query = httpx.get(f"{prometheus}/api/v1/query", params={"query": "mfd_detection_lag_seconds"}, timeout=10)
    lag = [sample["value"][1] for sample in query.json()["data"]["result"]]
    unscored = running.scalar(UNSCORED)
    raise AssertionError(f"alerts {alerts}, mfd_detection_lag_seconds {lag}, {unscored} readings unscored")


def test_prometheus_fires_on_a_stalled_detection_and_clears_after(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    prometheus = running.env["MFD_PROMETHEUS_URL"]
    running.wait(running.stack.prometheus_ready, "the stack's Prometheus", timeout=120)
    groups = httpx.get(f"{prometheus}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = {rule["name"]: rule["health"] for group in groups for rule in group["rules"]}
    assert rules == {"MfdDetectionLag": "ok", "MfdMachineSilent": "ok"}, rules
    assert {t["labels"]["job"] for t in _targets(prometheus)} == {"mfd-console", "mfd-bento", "prometheus"}
    running.wait(
        lambda: {t["labels"]["job"]: t["health"] for t in _targets(prometheus)}["mfd-bento"] == "up",
        "Prometheus scraping the Bento service's /metrics with the stack's key",
        timeout=120,
    )
    # A loaded host can leave detection over a minute behind before the stall: start from a caught-up,
    # quiet rule, so the firing below is the stall's.
    running.wait(lambda: running.scalar(UNSCORED) == 0, "every reading scored before the stall", timeout=300)
    running.wait(
        lambda: _alerts(prometheus).get("MfdDetectionLag") != "firing",
        "MfdDetectionLag quiet before the stall",
        timeout=120,
    )

    running.stack_cli("hold", "dagster-daemon")  # no sensor ticks: nothing scores the new readings
    try:
        added = running.mfd("generate", "--machines", "3", "--rows", "30", "--seed", "23", "--sink", "db")
        assert "generated 30 readings" in added.stdout + added.stderr
        running.wait(
            lambda: _firing(running, prometheus), "MfdDetectionLag firing while detection is stalled", 180
        )
    finally:
        running.stack_cli("release", "dagster-daemon")
    running.wait(running.stack.daemon_ready, "the Dagster daemon back", timeout=300)
    running.wait(lambda: running.scalar(UNSCORED) == 0, "the waiting readings scored", timeout=300)
    running.wait(
        lambda: _alerts(prometheus).get("MfdDetectionLag") != "firing",
        "MfdDetectionLag cleared once every reading is scored",
        timeout=120,
    )


def _targets(prometheus: str) -> list[dict]:
    return httpx.get(f"{prometheus}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
