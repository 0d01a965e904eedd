"""The console's HTTP interface, served by uvicorn over the SQLite twin and a real PostgreSQL: the page
lists machines by risk, /metrics speaks Prometheus, and the actions answer 401 / 404 / 409 / 422 as the
interface says; a resolution is stored as a maintenance record."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
from served import serving

from mfd.alarms import update_alarms
from mfd.console.app import ConsoleConfig, create_app, fragments
from mfd.console.render import Caches
from mfd.console.sample import SampleFleet, seed_fleet
from mfd.profiles.physics import plant_physics
from mfd.schema import SENSOR_COLUMNS
from mfd.storage.readings import create_engine, ensure_tables
from mfd.storage.tables import alarm_transitions, alarms, machine_risk, maintenance_records, readings

KEY = "console-test-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def console(readings_url: str) -> Iterator[tuple[str, sa.Engine]]:
    engine = create_engine(readings_url)
    ensure_tables(engine)
    seed_fleet(engine, SampleFleet(machines=12, readings_per_machine=8))
    app = create_app(engine, ConsoleConfig(api_keys=(KEY,), stale_after=timedelta(minutes=10)))
    with serving(app) as url:
        yield url, engine


def trends(fleet: str) -> dict[str, list[list[float]]]:
    """machine -> the trend its fleet row carries ([[epoch seconds, risk], ...])."""
    rows = re.findall(r'<tr class="machine[^"]*" data-machine="([^"]+)".*?data-trend="([^"]*)"', fleet)
    return {html.unescape(name): json.loads(html.unescape(trend)) for name, trend in rows}


def worst_alarm(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(alarms.c.id).order_by(alarms.c.peak_risk.desc())).scalars().first())


def test_actions_answer_as_the_interface_says(console: tuple[str, sa.Engine]) -> None:
    url, engine = console
    alarm = worst_alarm(engine)
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.post(f"/alarms/{alarm}/acknowledge", json={"actor": "ana"}).status_code == 401
        wrong = http.post(
            f"/alarms/{alarm}/acknowledge", json={"actor": "ana"}, headers={"authorization": "Bearer x"}
        )
        assert wrong.status_code == 401
        assert http.post("/alarms/987654/acknowledge", json={"actor": "ana"}, headers=AUTH).status_code == 404
        past = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
        snoozed = http.post(f"/alarms/{alarm}/snooze", json={"actor": "ana", "until": past}, headers=AUTH)
        assert (snoozed.status_code, snoozed.json()["field"]) == (422, "until")
        unresolved = http.post(f"/alarms/{alarm}/resolve", json={"actor": "ana"}, headers=AUTH)
        assert (unresolved.status_code, unresolved.json()["field"]) == (422, "outcome")
        ack = http.post(f"/alarms/{alarm}/acknowledge", json={"actor": "ana"}, headers=AUTH)
        assert (ack.status_code, ack.json()["state"]) == (200, "acknowledged")
        done = http.post(
            f"/alarms/{alarm}/resolve", json={"actor": "bo", "outcome": "failure_confirmed"}, headers=AUTH
        )
        assert (done.status_code, done.json()["state"]) == (200, "resolved")
        late = http.post(f"/alarms/{alarm}/acknowledge", json={"actor": "ana"}, headers=AUTH)
        assert (late.status_code, late.json()["state"]) == (409, "resolved")
        again = http.post(
            f"/alarms/{alarm}/resolve", json={"actor": "ana", "outcome": "no_fault_found"}, headers=AUTH
        )
        assert (again.status_code, again.json()["state"]) == (409, "resolved")
    with engine.connect() as conn:
        records = conn.execute(
            sa.select(maintenance_records.c.work_order_id, maintenance_records.c.outcome)
        ).all()
        actions = conn.execute(
            sa.select(alarm_transitions.c.action, alarm_transitions.c.actor)
            .where(alarm_transitions.c.alarm_id == alarm)
            .order_by(alarm_transitions.c.id)
        ).all()
    assert [tuple(r) for r in records] == [(f"alarm-{alarm}", "failure")]
    assert [tuple(a) for a in actions] == [("opened", "mfd"), ("acknowledged", "ana"), ("resolved", "bo")]


def test_page_lists_machines_by_risk_and_metrics_speak_prometheus(console: tuple[str, sa.Engine]) -> None:
    url, _ = console
    with httpx.Client(base_url=url, timeout=30) as http:
        page = http.get("/")
        metrics = http.get("/metrics")
        live = http.get("/api/fragments").json()
    assert page.status_code == 200
    # Each machine's trend goes as numbers (the page's script draws it): its 8 scored readings.
    assert {len(points) for points in trends(page.text).values()} == {8}
    # The why of each alarm: its peak reading's top features and, for a profile with physics, the nearest rule.
    assert f"top features: {SENSOR_COLUMNS[0]}" in page.text
    assert ("nearest rule:" in page.text) == (plant_physics() is not None)
    risks = [float(part.split('"')[1]) for part in page.text.split("data-risk=")[1:]]
    assert len(risks) == 12 and risks == sorted(risks, reverse=True)
    assert metrics.headers["content-type"].startswith("text/plain")
    names = {line.split("{")[0].split()[0] for line in metrics.text.splitlines() if not line.startswith("#")}
    assert names == {
        "mfd_alarms_open",
        "mfd_detection_lag_seconds",
        "mfd_readings_per_minute",
        "mfd_machines",
        "mfd_machines_stale",
    }
    assert 'mfd_alarms_open{state="open"}' in metrics.text and "mfd_machines 12" in metrics.text
    assert set(live) == {"summary", "alarms", "fleet", "tables", "generated_at"}
    assert "data-alarm" in live["alarms"]


def test_fleet_shows_time_to_failure_next_to_risk(console: tuple[str, sa.Engine]) -> None:
    url, engine = console
    with engine.begin() as conn:
        conn.execute(
            machine_risk.update().where(machine_risk.c.machine_id == "M0003").values(rul_estimate=12.5)
        )
    with httpx.Client(base_url=url, timeout=30) as http:
        fleet = http.get("/api/fragments").json()["fleet"]
    rows = {part.split('"')[0]: part for part in fleet.split('data-machine="')[1:]}
    assert "<td class='risk'>" in rows["M0003"] and "<td class='rul'>12.5 h</td>" in rows["M0003"]
    assert all("<td class='rul'>—</td>" in row for machine, row in rows.items() if machine != "M0003")


def test_an_alarms_risk_plot_around_it(console: tuple[str, sa.Engine]) -> None:
    url, engine = console
    alarm = worst_alarm(engine)
    with httpx.Client(base_url=url, timeout=30) as http:
        plot = http.get(f"/alarms/{alarm}")
        missing = http.get("/alarms/987654")
    assert plot.status_code == 200 and f"alarm {alarm} (" in plot.text
    points = plot.text.split('<polyline points="')[1].split('"')[0].split()
    assert len(points) == 8  # the machine's 8 scored readings lie within the hour around the alarm
    assert 'class="thr"' in plot.text and missing.status_code == 404


def test_tables_follow_the_store_between_loads(console: tuple[str, sa.Engine]) -> None:
    url, engine = console
    with httpx.Client(base_url=url, timeout=30) as http:
        before = http.get("/api/fragments").json()
        lowest = before["fleet"].split('data-machine="')[-1].split('"')[0]
        with engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(readings.c.id))).scalar_one()
        newest = pd.DataFrame(  # the least risky machine's next reading, far past everyone's risk
            {
                "reading_id": [last + 1],
                "machine_id": [lowest],
                "timestamp": [datetime.now(UTC)],
                "probability": [0.999],
                "label": [1],
            }
        )
        update_alarms(engine, newest, debounce=1)
        moved = http.get("/api/fragments").json()["fleet"]
        alarm = worst_alarm(engine)
        http.post(f"/alarms/{alarm}/acknowledge", json={"actor": "ana"}, headers=AUTH).raise_for_status()
        acknowledged = http.get("/api/fragments").json()["alarms"]
    assert (
        moved.split('data-machine="')[1].split('"')[0] == lowest != before["fleet"].split('data-machine="')[1]
    )
    assert f'data-alarm="{alarm}"' in acknowledged
    assert (
        acknowledged.split(f'data-alarm="{alarm}"')[1].split(">")[0].count('data-state="acknowledged"') == 1
    )


def test_a_machine_going_silent_shows_stale_without_a_write(readings_url: str) -> None:
    engine = create_engine(readings_url)
    ensure_tables(engine)
    end = datetime.now(UTC)
    seed_fleet(engine, SampleFleet(machines=4, readings_per_machine=3), end=end)
    config, caches = ConsoleConfig(stale_after=timedelta(minutes=10)), Caches()
    fresh = fragments(engine, config, caches, now=end + timedelta(minutes=1))
    silent = fragments(engine, config, caches, now=end + timedelta(minutes=11))
    assert 'class="machine stale"' not in fresh["fleet"] and fresh["fleet"].count("stale") == 0
    assert silent["fleet"].count('class="machine stale"') == 4


def _next_reading(engine: sa.Engine, machine: str, probability: float, at: datetime) -> None:
    """`machine`'s next scored reading (the store's next reading id) taken by the alarms, as detection."""
    with engine.connect() as conn:
        last = conn.execute(sa.select(sa.func.max(machine_risk.c.last_reading_id))).scalar_one()
    reading = {"reading_id": [last + 1], "machine_id": [machine], "timestamp": [at]}
    update_alarms(engine, pd.DataFrame(reading | {"probability": [probability], "label": [1]}), debounce=1)


def test_a_machines_trend_follows_its_scored_readings(console: tuple[str, sa.Engine]) -> None:
    url, engine = console
    at = datetime.now(UTC).replace(microsecond=0)
    with httpx.Client(base_url=url, timeout=30) as http:
        before = http.get("/api/fragments").json()
        _next_reading(engine, "M0003", 0.777, at)
        after = http.get("/api/fragments", params={"tables": before["tables"]}).json()
        # A trend moved without passing the cursor (a last reading id below the highest one kept): the
        # console reads it by key rather than showing the one it kept.
        with engine.begin() as conn:
            conn.execute(
                machine_risk.update()
                .where(machine_risk.c.machine_id == "M0005")
                .values(last_reading_id=machine_risk.c.last_reading_id - 1, trend="[[1000,0.25],[2000,0.5]]")
            )
        moved = http.get("/api/fragments", params={"tables": after["tables"]}).json()
        quiet = http.get("/api/fragments", params={"tables": moved["tables"]}).json()
    old, new, last = trends(before["fleet"]), trends(after["fleet"]), trends(moved["fleet"])
    assert new["M0003"] == [*old["M0003"], [at.timestamp(), 0.777]]
    assert {m: t for m, t in new.items() if m != "M0003"} == {m: t for m, t in old.items() if m != "M0003"}
    assert last["M0005"] == [[1000, 0.25], [2000, 0.5]] and last["M0003"] == new["M0003"]
    # Nothing changed since the tables the page shows: the poll leaves them out.
    assert set(quiet) == {"summary", "tables", "generated_at"} and quiet["tables"] == moved["tables"]
