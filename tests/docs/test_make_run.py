"""`make run` on a fresh copy of the checkout prints its summary, and reopening the UI (`make dev`) after it
launches no run for 2 minutes: the sensors know what `make run` did.

Every sensor that `make dev` turns on evaluates inside the window: the 5 s, 30 s and 60 s sensors several
times, `retraining_sensor` (every 300 s) once, at the daemon's start, which is when a sensor with no
shared cursor or run key would redo `make run`'s work. The test waits until each has ticked at least once
after `make dev` started (and 2 minutes have passed), then finds no run created since, and no failed tick.
`drift_schedule` (hourly, on the hour) may fire inside any window; its run is new work, not a redo, and is
left out.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_documented_commands import _copy_of_the_checkout, _env  # noqa: E402

from mfd.services import free_port, stop_process_group  # noqa: E402

WINDOW_S = 120
SCHEDULE_TAG = "dagster/schedule_name"
STATE = """
query State($after: Float!) {
  sensorsOrError(repositorySelector: {repositoryLocationName: "mfd", repositoryName: "__repository__"}) {
    __typename
    ... on Sensors { results { name sensorState { status ticks(afterTimestamp: $after, limit: 50) {
      status timestamp runIds error { message } } } } }
  }
  runsOrError(filter: {createdAfter: $after}) {
    __typename
    ... on Runs { results { runId jobName creationTime tags { key value } } }
  }
}
"""


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _state(url: str, after: float) -> tuple[dict[str, list[dict]], list[dict]]:
    """Ticks since `after` of each running sensor, and the runs created since `after`."""
    data = httpx.post(f"{url}/graphql", json={"query": STATE, "variables": {"after": after}}, timeout=60)
    data = data.json()["data"]
    assert data["sensorsOrError"]["__typename"] == "Sensors", data["sensorsOrError"]
    ticks = {
        s["name"]: s["sensorState"]["ticks"]
        for s in data["sensorsOrError"]["results"]
        if s["sensorState"]["status"] == "RUNNING"
    }
    return ticks, data["runsOrError"]["results"]


@pytest.mark.docs_walk
@pytest.mark.timeout(5400)
def test_make_run_prints_the_summary_and_reopening_the_ui_launches_no_run(tmp_path: Path) -> None:
    root = _copy_of_the_checkout(tmp_path / "mfd")
    env = _env(root)
    dagster, mlflow, bento = free_port(), free_port(), free_port()
    ports = [f"DAGSTER_PORT={dagster}", f"MLFLOW_PORT={mlflow}", f"BENTO_PORT={bento}"]

    run = subprocess.run(
        ["make", "run", *ports], cwd=root, env=env, capture_output=True, text=True, timeout=3600, check=False
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = run.stdout[run.stdout.rindex("\nDone.\n") :]
    print(summary)
    with sqlite3.connect(root / ".mfd" / "readings.db") as db:
        stored = db.execute("SELECT count(*), max(id) FROM readings").fetchone()
        events = db.execute("SELECT count(*) FROM failure_events").fetchone()[0]
    loaded = re.search(r"readings: ([\d,]+) loaded, ([\d,]+) rejected", summary)
    assert loaded and _number(loaded[1]) == stored[0] > 0
    champion = re.search(r"champion: \S+ version (\d+); holdout .*pr_auc (0\.\d{3})", summary)
    assert champion, summary
    failures = re.search(r"failure events: ([\d,]+) among readings 1\.\.([\d,]+)", summary)
    assert failures and _number(failures[2]) == stored[1] and _number(failures[1]) == events
    assert re.search(r"drift: none \(", summary), summary  # the generator's own data does not drift
    for port in (dagster, mlflow, bento):
        assert f"http://127.0.0.1:{port}" in summary

    started = time.time()
    dev = subprocess.Popen(
        ["make", "dev", *ports[:2]],
        cwd=root,
        env=env,
        stdout=(tmp_path / "dev.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{dagster}"
    try:
        ticks: dict[str, list[dict]] = {}
        runs: list[dict] = []
        while time.time() < started + WINDOW_S + 600:
            time.sleep(10)
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()[-3000:]
            try:
                ticks, runs = _state(url, started)
            except httpx.HTTPError:
                continue  # not up yet
            if time.time() >= started + WINDOW_S and ticks and all(ticks.values()):
                break
    finally:
        stop_process_group(dev, sig=signal.SIGINT, timeout=60)
    print({name: [t["status"] for t in sensor_ticks] for name, sensor_ticks in ticks.items()})
    assert ticks and all(ticks.values()), (
        f"sensors that never ticked: {[n for n, t in ticks.items() if not t]}"
    )
    failed = {
        n: t["error"] for n, sensor_ticks in ticks.items() for t in sensor_ticks if t["status"] == "FAILURE"
    }
    assert not failed, failed
    launched = [r for r in runs if SCHEDULE_TAG not in {t["key"] for t in r["tags"]}]
    assert not launched, [(r["jobName"], r["tags"]) for r in launched]
