"""Debian's Prometheus (`make deps`) scraping the console's /metrics with the shipped rules
(deploy/prometheus/alerts.yml): on a store whose detection stalled (readings waiting, the newest prediction
20 minutes old; machines silent as long) both rules fire. The shipped config passes promtool."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from served import serving

from mfd.console.app import ConsoleConfig, create_app
from mfd.console.sample import SampleFleet, sample_readings, seed_fleet
from mfd.storage.readings import create_engine, ensure_tables, insert_readings

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def stalled_console(tmp_path: Path) -> Iterator[str]:
    engine = create_engine(f"sqlite:///{tmp_path / 'readings.db'}")
    ensure_tables(engine)
    twenty_ago = datetime.now(UTC) - timedelta(minutes=20)
    fleet = SampleFleet(machines=5, readings_per_machine=4)
    seed_fleet(engine, fleet, end=twenty_ago)  # scored 20 minutes ago
    later = sample_readings(
        SampleFleet(machines=5, readings_per_machine=1), twenty_ago + timedelta(minutes=1)
    )
    insert_readings(engine, later, source="unscored")  # ...and never since
    with serving(create_app(engine, ConsoleConfig(stale_after=timedelta(minutes=10)))) as url:
        yield url


@pytest.fixture
def prometheus(stalled_console: str, tmp_path: Path) -> Iterator[str]:
    assert Path(PROMETHEUS).exists(), "Debian's prometheus is missing: `make deps` installs it"
    target = stalled_console.removeprefix("http://")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"rule_files: ['{DEPLOY / 'alerts.yml'}']\n"
        f"scrape_configs: [{{job_name: mfd-console, static_configs: [{{targets: ['{target}']}}]}}]\n"
    )
    port = _port()
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_shipped_config_and_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool") or "/usr/bin/promtool"
    subprocess.run(
        [promtool, "check", "config", str(DEPLOY / "prometheus.yml")], check=True, capture_output=True
    )


def test_rules_fire_on_a_stalled_detection(stalled_console: str, prometheus: str) -> None:
    page = httpx.get(stalled_console, timeout=30).text
    assert page.count('class="machine stale"') == 5 and "5 silent over 10 min" in page
    deadline, firing = time.monotonic() + 60, set()
    while firing != {"MfdDetectionLag", "MfdMachineSilent"}:
        assert time.monotonic() < deadline, f"firing after 60 s: {sorted(firing)}"
        time.sleep(0.5)
        try:
            alerts = httpx.get(f"{prometheus}/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        except httpx.TransportError:  # not listening yet
            continue
        firing = {a["labels"]["alertname"] for a in alerts if a["state"] == "firing"}
    query = httpx.get(f"{prometheus}/api/v1/query", params={"query": "mfd_detection_lag_seconds"}, timeout=5)
    (sample,) = query.json()["data"]["result"]
    assert float(sample["value"][1]) > 60 * 19
