"""Alarms on the SQLite twin and a real PostgreSQL: debounced opening, one alarm per machine and kind,
idempotent re-runs, the lifecycle's conflicts, escalation once, resolution as a maintenance record."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mfd.alarms import (
    ACKNOWLEDGED,
    RESOLVED,
    AlarmConflict,
    AlarmNotFound,
    InvalidAction,
    acknowledge,
    escalate_due,
    resolve,
    snooze,
    update_alarms,
    wake_snoozed,
)
from mfd.schema import PROFILE
from mfd.storage.readings import create_engine, ensure_tables
from mfd.storage.tables import alarm_transitions, alarms, alert_outbox, machine_risk, maintenance_records

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def scored(machine: str, labels: list[int], first_id: int, probability: float = 0.95) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame(
        {
            "reading_id": range(first_id, first_id + n),
            "machine_id": machine,
            "machine_type": "L",
            "timestamp": pd.date_range(T0 + timedelta(minutes=first_id), periods=n, freq="1min"),
            "probability": [probability if x else 0.1 for x in labels],
            "label": labels,
        }
    )


def rows(engine: sa.Engine, table: sa.Table) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(table)).mappings()]


@pytest.fixture
def engine(readings_url: str) -> sa.Engine:
    engine = create_engine(readings_url)
    ensure_tables(engine)  # the readings store as detection leaves it (these readings' rows absent)
    return engine


def test_fifty_crossings_open_one_alarm_with_count_fifty(engine: sa.Engine) -> None:
    for batch in range(5):  # 5 batches of 10 crossings, another machine healthy beside it
        update_alarms(engine, scored("M-1", [1] * 10, 1 + batch * 10), now=T0)
        update_alarms(engine, scored("M-2", [0] * 10, 1001 + batch * 10), now=T0)
    again = update_alarms(engine, scored("M-1", [1] * 10, 41), now=T0)  # a re-run of the last batch
    found = rows(engine, alarms)
    assert [(a["machine_id"], a["count"], a["state"]) for a in found] == [("M-1", 50, "open")]
    assert found[0]["first_reading_id"] == 1 and found[0]["last_reading_id"] == 50
    assert again.skipped == 10 and again.opened == again.bumped == 0
    assert [t["action"] for t in rows(engine, alarm_transitions)] == ["opened"]
    risk = {r["machine_id"]: r for r in rows(engine, machine_risk)}
    assert risk["M-1"]["streak"] == 50 and risk["M-2"]["streak"] == 0


def test_crossings_shorter_than_the_debounce_open_nothing(engine: sa.Engine) -> None:
    update_alarms(engine, scored("M-1", [1, 1, 0, 1, 1, 0, 1], 1), debounce=3, now=T0)
    assert rows(engine, alarms) == []
    update_alarms(engine, scored("M-1", [1, 1], 8), debounce=3, now=T0)  # streak 1 carried over: 3
    (alarm,) = rows(engine, alarms)
    assert alarm["count"] == 3 and alarm["first_reading_id"] == 7


def test_escalation_fires_once(engine: sa.Engine) -> None:
    update_alarms(engine, scored("M-1", [1] * 3, 1), now=T0)
    assert escalate_due(engine, timedelta(minutes=10), now=T0 + timedelta(minutes=5)) == []
    later = T0 + timedelta(minutes=11)
    results: list[list[int]] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        barrier.wait()
        results.append(escalate_due(engine, timedelta(minutes=10), now=later))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert escalate_due(engine, timedelta(minutes=10), now=later + timedelta(hours=1)) == []
    assert sorted(len(r) for r in results) == [0, 0, 1]
    (queued,) = rows(engine, alert_outbox)
    assert queued["idempotency_key"] == "mfd-alarm-escalation-1" and queued["status"] == "pending"
    assert [t["action"] for t in rows(engine, alarm_transitions)] == ["opened", "escalated"]


def test_concurrent_acknowledge_leaves_one_transition(engine: sa.Engine) -> None:
    update_alarms(engine, scored("M-1", [1] * 3, 1), now=T0)
    (alarm,) = rows(engine, alarms)
    outcomes: list[object] = []
    barrier = threading.Barrier(4)

    def ack(who: str) -> None:
        barrier.wait()
        try:
            outcomes.append(acknowledge(engine, alarm["id"], who)["acknowledged_by"])
        except AlarmConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=ack, args=(f"tech-{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    conflicts = [o for o in outcomes if isinstance(o, AlarmConflict)]
    assert len(conflicts) == 3 and all(c.state == ACKNOWLEDGED for c in conflicts)
    acks = [t for t in rows(engine, alarm_transitions) if t["action"] == "acknowledged"]
    assert len(acks) == 1 and acks[0]["actor"] in outcomes


def test_resolution_becomes_a_maintenance_record_and_a_new_alarm_can_open(engine: sa.Engine) -> None:
    update_alarms(engine, scored("M-1", [1] * 4, 1), now=T0)
    (alarm,) = rows(engine, alarms)
    with pytest.raises(InvalidAction) as missing:
        resolve(engine, alarm["id"], "ana", None)
    assert missing.value.field == "outcome"
    resolve(engine, alarm["id"], "ana", "no_fault_found")
    with pytest.raises(AlarmConflict) as late:
        acknowledge(engine, alarm["id"], "bo")
    assert late.value.state == RESOLVED
    with pytest.raises(AlarmNotFound):
        acknowledge(engine, 999, "bo")
    (record,) = rows(engine, maintenance_records)
    assert (record["work_order_id"], record["machine_id"], record["outcome"]) == (
        "alarm-1",
        "M-1",
        "no_fault",
    )
    update_alarms(engine, scored("M-1", [1] * 3, 5), now=T0)  # the streak started again: 3 more open one
    second = [a for a in rows(engine, alarms) if a["id"] != alarm["id"]]
    assert [(a["state"], a["count"]) for a in second] == [("open", 3)]
    resolve(engine, second[0]["id"], "ana", "failure_confirmed")
    assert sorted(r["outcome"] for r in rows(engine, maintenance_records)) == ["failure", "no_fault"]


def test_snooze_needs_a_future_time_and_wakes(engine: sa.Engine) -> None:
    update_alarms(engine, scored("M-1", [1] * 3, 1), now=T0)
    now = datetime.now(UTC)
    with pytest.raises(InvalidAction) as past:
        snooze(engine, 1, "ana", now - timedelta(minutes=1), now=now)
    assert past.value.field == "until"
    snooze(engine, 1, "ana", now + timedelta(minutes=30), now=now)
    update_alarms(engine, scored("M-1", [1] * 2, 4), now=now)  # crossings while snoozed bump it
    assert wake_snoozed(engine, now + timedelta(minutes=10)) == 0
    assert wake_snoozed(engine, now + timedelta(minutes=31)) == 1
    (alarm,) = rows(engine, alarms)
    assert (alarm["state"], alarm["count"]) == ("open", 5)


def _reference(frame: pd.DataFrame, debounce: int) -> tuple[dict, dict]:
    """The lifecycle's opening rules reading by reading, per machine: (alarms by machine: count, first and
    last reading id; streaks by machine)."""
    found: dict[str, dict] = {}
    streak: dict[str, int] = {}
    start: dict[str, int] = {}
    for row in frame.sort_values("reading_id").itertuples():
        m, crossed = row.machine_id, row.label == 1
        streak[m] = streak.get(m, 0) + 1 if crossed else 0
        if crossed and streak[m] == 1:
            start[m] = row.reading_id
        if m in found and crossed:
            found[m]["count"] += 1
            found[m]["last"] = row.reading_id
        elif m not in found and streak[m] >= debounce:
            found[m] = {"count": streak[m], "first": start[m], "last": row.reading_id}
    return found, streak


def test_interleaved_machines_in_random_batches_match_the_reading_by_reading_rules(engine: sa.Engine) -> None:
    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame(
        {
            "reading_id": np.arange(1, n + 1),
            "machine_id": rng.choice([f"M-{i}" for i in range(8)], n),
            "machine_type": "L",
            "timestamp": pd.date_range(T0, periods=n, freq="1min"),
            "probability": rng.random(n),
        }
    )
    frame["label"] = (frame["probability"] >= 0.35).astype(int)
    cuts = np.sort(rng.choice(np.arange(1, n), 12, replace=False))
    previous = 0
    for cut in [*cuts.tolist(), n]:
        # each batch shuffled, and re-sending the previous batch's last 20 readings (taken once)
        batch = frame.iloc[max(previous - 20, 0) : cut].sample(frac=1.0, random_state=int(cut))
        update_alarms(engine, batch, debounce=4, now=T0)
        previous = cut
    expected, streaks = _reference(frame, debounce=4)
    stored = {a["machine_id"]: a for a in rows(engine, alarms)}
    assert {m: (a["count"], a["first_reading_id"], a["last_reading_id"]) for m, a in stored.items()} == {
        m: (e["count"], e["first"], e["last"]) for m, e in expected.items()
    }
    risk = {r["machine_id"]: r for r in rows(engine, machine_risk)}
    assert {m: r["streak"] for m, r in risk.items()} == streaks
    last = frame.groupby("machine_id")["reading_id"].max().to_dict()
    assert {m: r["last_reading_id"] for m, r in risk.items()} == last
    peaks = frame[frame["label"] == 1].groupby("machine_id")["probability"].max()
    assert all(a["peak_risk"] <= peaks[m] + 1e-12 for m, a in stored.items())
    assert all(
        len(json.loads(r["trend"])) == min(60, (frame["machine_id"] == m).sum()) for m, r in risk.items()
    )


def test_no_fault_found_labels_every_reading_the_alarm_covered_healthy(engine: sa.Engine) -> None:
    horizon = PROFILE.horizon.to_pytimedelta()  # the default label window: a record labels [T - it, T]
    batch = scored("M-1", [1] * 6, 1).assign(timestamp=[T0 + k * horizon / 2 for k in range(6)])
    update_alarms(engine, batch, debounce=3, now=T0)
    (alarm,) = rows(engine, alarms)
    resolve(engine, alarm["id"], "ana", "no_fault_found")
    records = rows(engine, maintenance_records)
    assert {r["outcome"] for r in records} == {"no_fault"}
    assert sorted(r["work_order_id"] for r in records) == ["alarm-1", "alarm-1-2", "alarm-1-3"]
    ends = [r["timestamp"].replace(tzinfo=UTC) for r in records]
    for t in batch["timestamp"]:  # every reading the alarm covered lies in some record's window
        assert any(end - horizon <= t.to_pydatetime() <= end for end in ends), t


def test_time_to_failure_is_kept_per_machine(engine: sa.Engine) -> None:
    update_alarms(engine, scored("M-1", [0, 0], 1).assign(rul_estimate=[40.0, 12.5]), now=T0)
    update_alarms(engine, scored("M-2", [0], 3).assign(rul_estimate=[float("nan")]), now=T0)
    update_alarms(engine, scored("M-1", [0], 4), now=T0)  # a frame without estimates keeps the last one
    risk = {r["machine_id"]: r["rul_estimate"] for r in rows(engine, machine_risk)}
    assert risk == {"M-1": 12.5, "M-2": None}


def test_in_the_callers_transaction_alarms_commit_and_roll_back_with_it(engine: sa.Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        update_alarms(engine, scored("M-1", [1] * 3, 1), debounce=3, now=T0, conn=conn)
        raise RuntimeError("the caller's write failed after the alarms' update")
    assert rows(engine, alarms) == [] and rows(engine, machine_risk) == []
    with engine.begin() as conn:
        report = update_alarms(engine, scored("M-1", [1] * 3, 1), debounce=3, now=T0, conn=conn)
    assert report.opened == 1 and [a["count"] for a in rows(engine, alarms)] == [3]
