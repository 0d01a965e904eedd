"""What people and time do to an alarm. Each action is a conditional UPDATE (`WHERE state = expected`), so
of two people acting at once one wins and the other gets AlarmConflict with the state it found; every
change writes a row of `alarm_transitions` in the same transaction.

open -> acknowledged -> resolved; open or acknowledged -> snoozed (until a time; it wakes to the state it
had); any unresolved -> resolved with an outcome. An open alarm unacknowledged past a configured time
escalates once: a webhook alert through the outbox (`mfd.alerts.outbox` delivers it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alarms.model import (
    ACKNOWLEDGED,
    ACTIVE,
    FAILURE_CONFIRMED,
    MAINTENANCE_DONE,
    OPEN,
    OUTCOMES,
    RESOLVED,
    SNOOZED,
    SYSTEM,
    AlarmConflict,
    AlarmNotFound,
    InvalidAction,
    aware,
    ensure_tables,
    record,
)
from mfd.alerts.outbox import PENDING
from mfd.schema import FAILURE_OUTCOMES, NO_FAULT, PROFILE
from mfd.storage.tables import (
    alarms,
    alert_outbox,
    machine_risk,
    maintenance_records,
)

GENERIC_FAILURE = "failure"  # a confirmed failure whose mode the technician did not name


def _actor(actor: str) -> str:
    actor = (actor or "").strip()
    if not actor or len(actor) > 128:
        raise InvalidAction("actor", "give who acts (1 to 128 characters)")
    return actor


def _move(
    conn: sa.Connection,
    alarm_id: int,
    action: str,
    allowed: Sequence[str],
    values: dict[str, Any],
) -> str:
    """Move the alarm from one of `allowed` states by conditional UPDATEs (the first takes the write
    lock); returns the state it left. AlarmNotFound, or AlarmConflict with the state it is in."""
    for before in allowed:
        moved = conn.execute(
            alarms.update().where(alarms.c.id == alarm_id, alarms.c.state == before).values(**values)
        )
        if moved.rowcount == 1:
            return before
    state = conn.execute(sa.select(alarms.c.state).where(alarms.c.id == alarm_id)).scalar()
    if state is None:
        raise AlarmNotFound(f"no alarm {alarm_id}")
    raise AlarmConflict(alarm_id, state, action)


def _row(conn: sa.Connection, alarm_id: int) -> dict[str, Any]:
    return dict(conn.execute(sa.select(alarms).where(alarms.c.id == alarm_id)).mappings().one())


def acknowledge(engine: Engine, alarm_id: int, actor: str, now: datetime | None = None) -> dict[str, Any]:
    """open or snoozed -> acknowledged (who, when). Returns the alarm."""
    actor, now = _actor(actor), now or datetime.now(UTC)
    ensure_tables(engine)
    with engine.begin() as conn:
        values = {"state": ACKNOWLEDGED, "acknowledged_by": actor, "acknowledged_at": now, "updated_at": now}
        before = _move(conn, alarm_id, "acknowledge", (OPEN, SNOOZED), values)
        record(conn, alarm_id, "acknowledged", before, ACKNOWLEDGED, actor, now)
        return _row(conn, alarm_id)


def snooze(
    engine: Engine, alarm_id: int, actor: str, until: datetime | None, now: datetime | None = None
) -> dict[str, Any]:
    """open or acknowledged -> snoozed until `until` (in the future, else InvalidAction on `until`)."""
    actor, now = _actor(actor), now or datetime.now(UTC)
    if until is None:
        raise InvalidAction("until", "give the time the snooze ends")
    if aware(until) <= now:
        raise InvalidAction("until", f"{aware(until).isoformat()} is not in the future")
    ensure_tables(engine)
    with engine.begin() as conn:
        values = {"state": SNOOZED, "snoozed_until": aware(until), "updated_at": now}
        before = _move(conn, alarm_id, "snooze", (OPEN, ACKNOWLEDGED), values)
        record(conn, alarm_id, "snoozed", before, SNOOZED, actor, now, {"until": aware(until)})
        return _row(conn, alarm_id)


MAX_RECORDS = 48  # no-fault records of one alarm (one per horizon it covered), at most


def record_times(first_seen: datetime, last_seen: datetime, horizon: timedelta) -> list[datetime]:
    """Times of no-fault records whose labelling windows ([T - horizon, T], the default label window)
    together cover the alarm's readings from first_seen to last_seen: T = last_seen, last_seen - horizon,
    ... (at most MAX_RECORDS, the newest kept)."""
    times = [last_seen]
    while times[-1] - horizon > first_seen and len(times) < MAX_RECORDS:
        times.append(times[-1] - horizon)
    return times


def _record_outcome(conn: sa.Connection, alarm: dict[str, Any], outcome: str, mode: str | None) -> str | None:
    """The resolution as maintenance records, so labels flow into retraining: a confirmed failure is one
    record (work order `alarm-<id>`) at the alarm's last crossing, labelling the readings within the
    horizon before it failures; no fault found labels every reading the alarm covered healthy (one record
    per horizon from its last crossing back to its first: `alarm-<id>`, `alarm-<id>-2`, ...); maintenance
    done writes none (the alarm was neither right nor wrong). Returns the records' outcome."""
    if outcome == MAINTENANCE_DONE:
        return None
    last_seen = aware(alarm["last_seen"])
    if outcome == FAILURE_CONFIRMED:
        label, times = mode or GENERIC_FAILURE, [last_seen]
    else:
        label = NO_FAULT
        times = record_times(aware(alarm["first_seen"]), last_seen, PROFILE.horizon.to_pytimedelta())
    source = f"alarm {alarm['id']} resolved by {alarm['resolved_by']}"
    rows = [
        {
            "work_order_id": f"alarm-{alarm['id']}" + (f"-{k + 1}" if k else ""),
            "machine_id": alarm["machine_id"],
            "timestamp": at,
            "outcome": label,
            "source": source,
        }
        for k, at in enumerate(times)
    ]
    conn.execute(maintenance_records.insert(), rows)
    return label


def resolve(
    engine: Engine,
    alarm_id: int,
    actor: str,
    outcome: str | None,
    now: datetime | None = None,
    failure_mode: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Any unresolved state -> resolved with `outcome` (one of OUTCOMES, else InvalidAction on `outcome`),
    written as a maintenance record in the same transaction; the machine's streak starts again."""
    actor, now = _actor(actor), now or datetime.now(UTC)
    if outcome not in OUTCOMES:
        raise InvalidAction("outcome", f"give one of {', '.join(OUTCOMES)}")
    if failure_mode and (outcome != FAILURE_CONFIRMED or failure_mode not in FAILURE_OUTCOMES):
        raise InvalidAction(
            "failure_mode", f"only with {FAILURE_CONFIRMED}: one of {', '.join(FAILURE_OUTCOMES)}"
        )
    ensure_tables(engine)
    with engine.begin() as conn:
        values = {
            "state": RESOLVED,
            "open_key": None,
            "outcome": outcome,
            "resolved_by": actor,
            "resolved_at": now,
            "updated_at": now,
        }
        before = _move(conn, alarm_id, "resolve", ACTIVE, values)
        alarm = _row(conn, alarm_id)
        label = _record_outcome(conn, alarm, outcome, failure_mode)
        detail = {"outcome": outcome, "maintenance_outcome": label, "note": note}
        record(conn, alarm_id, "resolved", before, RESOLVED, actor, now, detail)
        conn.execute(
            machine_risk.update().where(machine_risk.c.machine_id == alarm["machine_id"]).values(streak=0)
        )
        return alarm


def wake_snoozed(engine: Engine, now: datetime | None = None) -> int:
    """Snoozed alarms whose time is up go back to the state they had (acknowledged when someone had,
    else open). Returns how many woke."""
    now = now or datetime.now(UTC)
    ensure_tables(engine)
    t = alarms.c
    due = sa.select(t.id, t.acknowledged_at).where(t.state == SNOOZED, t.snoozed_until <= now)
    woke = 0
    with engine.begin() as conn:
        for alarm_id, acknowledged_at in conn.execute(due).all():
            state = ACKNOWLEDGED if acknowledged_at is not None else OPEN
            moved = conn.execute(
                alarms.update()
                .where(t.id == alarm_id, t.state == SNOOZED)
                .values(state=state, snoozed_until=None, updated_at=now)
            )
            if moved.rowcount == 1:
                record(conn, alarm_id, "woke", SNOOZED, state, SYSTEM, now)
                woke += 1
    return woke


def escalation_payload(alarm: dict[str, Any], after: timedelta, now: datetime) -> str:
    """The escalation's webhook body (generic JSON)."""
    return json.dumps(
        {
            "idempotency_key": f"mfd-alarm-escalation-{alarm['id']}",
            "event": "alarm_escalated",
            "alarm_id": int(alarm["id"]),
            "machine_id": alarm["machine_id"],
            "kind": alarm["kind"],
            "count": int(alarm["count"]),
            "peak_risk": round(float(alarm["peak_risk"]), 6),
            "opened_at": aware(alarm["opened_at"]).isoformat(),
            "unacknowledged_for_s": round((now - aware(alarm["opened_at"])).total_seconds()),
            "escalate_after_s": after.total_seconds(),
            "top_features": json.loads(alarm["top_features"]) if alarm["top_features"] else [],
            "nearest_rule": json.loads(alarm["nearest_rule"]) if alarm["nearest_rule"] else None,
        }
    )


def _enqueue_escalation(conn: sa.Connection, alarm: dict[str, Any], after: timedelta, now: datetime) -> None:
    # The outbox suppresses a machine's alerts within its dedup window of another: the escalation is keyed
    # `<machine>#escalation`, so the failure alerts that opened the alarm do not swallow it.
    conn.execute(
        alert_outbox.insert().values(
            idempotency_key=f"mfd-alarm-escalation-{alarm['id']}",
            reading_id=int(alarm["last_reading_id"]),
            machine_id=f"{str(alarm['machine_id'])[:52]}#escalation",
            timestamp=now,
            payload=escalation_payload(alarm, after, now),
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            delivered_to="[]",
            created_at=now,
        )
    )


def escalate_due(engine: Engine, after: timedelta, now: datetime | None = None) -> list[int]:
    """Open alarms unacknowledged for `after` or longer and never escalated: each marked escalated and its
    webhook alert enqueued in one transaction (so once, whoever runs this at the same time). Returns ids."""
    now = now or datetime.now(UTC)
    ensure_tables(engine)
    t = alarms.c
    due = sa.select(t.id).where(t.state == OPEN, t.escalated_at.is_(None), t.opened_at <= now - after)
    with engine.connect() as conn:
        ids = [int(i) for i in conn.execute(due.order_by(t.opened_at)).scalars()]
    escalated = []
    for alarm_id in ids:
        with engine.begin() as conn:
            marked = conn.execute(
                alarms.update()
                .where(t.id == alarm_id, t.state == OPEN, t.escalated_at.is_(None))
                .values(escalated_at=now, updated_at=now)
            )
            if marked.rowcount != 1:
                continue
            alarm = _row(conn, alarm_id)
            _enqueue_escalation(conn, alarm, after, now)
            record(conn, alarm_id, "escalated", OPEN, OPEN, SYSTEM, now, {"after_s": after.total_seconds()})
            escalated.append(alarm_id)
    return escalated
