"""The console in a real browser: Debian's Chromium (/usr/bin/chromium, from `make deps`) driven by
Playwright, against `mfd console` started here on a SQLite store seeded with scored readings. The page lists
machines by risk, shows a new riskier machine without a reload, acknowledges and resolves an alarm, and the
outcome is stored as a maintenance record. Screenshots go to the test's tmp_path."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from browser import acknowledge_then_resolve, chromium_page, machine_risks

from mfd.alarms import update_alarms
from mfd.console.sample import SampleFleet, seed_fleet
from mfd.storage.readings import create_engine, ensure_tables
from mfd.storage.tables import alarms, maintenance_records

pytestmark = pytest.mark.integration

KEY = "browser-key"
WAIT_MS = 60_000


@pytest.fixture
def store(tmp_path: Path) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{tmp_path / 'readings.db'}"
    engine = create_engine(url)
    ensure_tables(engine)
    seed_fleet(engine, SampleFleet(machines=15, readings_per_machine=10))
    return url, engine


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def console(store: tuple[str, sa.Engine], tmp_path: Path) -> Iterator[str]:
    """`mfd console` in its own process; its URL once /healthz answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    env |= {"MFD_DATABASE_URL": store[0], "MFD_HOME": str(tmp_path / "home"), "MFD_API_KEYS": KEY}
    log = (tmp_path / "console.log").open("w")
    command = [sys.executable, "-m", "mfd.cli.main", "console", "--port", str(port), "--poll", "1"]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, (tmp_path / "console.log").read_text()
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "mfd console did not answer"
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def drawn(page: object) -> dict[str, int]:
    """machine -> the number of points of the sparkline drawn in its fleet row (0 when none is drawn)."""
    return page.locator("tr.machine").evaluate_all(
        """rs => Object.fromEntries(rs.map(r => {
            const line = r.querySelector('td.trend svg polyline');
            const points = line ? line.getAttribute('points').trim().split(/\\s+/).filter(Boolean) : [];
            return [r.dataset.machine, points.length];
        }))"""
    )


@pytest.fixture
def page() -> Iterator[object]:
    with chromium_page() as opened:
        yield opened


def test_console_in_a_browser(
    page: object, console: str, store: tuple[str, sa.Engine], tmp_path: Path
) -> None:
    _, engine = store
    page.goto(console, wait_until="load", timeout=WAIT_MS)
    risks = machine_risks(page)
    assert len(risks) == 15 and risks == sorted(risks, reverse=True)
    # The page's script drew every machine's sparkline from the trend its row carries: 10 readings each.
    assert set(drawn(page).values()) == {10}, drawn(page)
    page.screenshot(path=str(tmp_path / "1-fleet.png"), full_page=True)

    # A riskier machine scored meanwhile shows up first without a reload (the page polls).
    new = pd.DataFrame(
        {
            "reading_id": [10_001, 10_002, 10_003],
            "machine_id": "Z-NEW",
            "machine_type": "H",
            "timestamp": pd.date_range(datetime.now(UTC), periods=3, freq="1s"),
            "probability": [0.995] * 3,
            "label": [1] * 3,
        }
    )
    update_alarms(engine, new)
    page.locator('tr.machine[data-machine="Z-NEW"]').wait_for(timeout=WAIT_MS)
    assert page.locator("tr.machine").first.get_attribute("data-machine") == "Z-NEW"
    sparklines = drawn(page)  # the swapped-in rows drawn too, the new machine's from its 3 readings
    assert len(sparklines) == 16 and sparklines.pop("Z-NEW") == 3 and set(sparklines.values()) == {10}

    with engine.connect() as conn:
        alarm = int(
            conn.execute(
                sa.select(alarms.c.id)
                .where(alarms.c.machine_id != "Z-NEW")
                .order_by(alarms.c.peak_risk.desc())
            )
            .scalars()
            .first()
        )
    acknowledge_then_resolve(page, alarm, KEY, tmp_path, WAIT_MS)

    with engine.connect() as conn:
        record = conn.execute(
            sa.select(maintenance_records.c.machine_id, maintenance_records.c.outcome).where(
                maintenance_records.c.work_order_id == f"alarm-{alarm}"
            )
        ).one()
    with engine.connect() as conn:
        machine = conn.execute(sa.select(alarms.c.machine_id).where(alarms.c.id == alarm)).scalar_one()
    assert tuple(record) == (machine, "no_fault")
    assert all(
        (tmp_path / f).stat().st_size > 0 for f in ("1-fleet.png", "2-acknowledged.png", "3-resolved.png")
    )
