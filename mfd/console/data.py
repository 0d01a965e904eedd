"""What the console shows, read in a few indexed queries: the fleet (one row per machine from
`machine_risk`, with its unresolved alarm), the unresolved alarms in the order people work them, one
alarm's risk around it, and the figures `/metrics` exports."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alarms.model import ACTIVE, RISK, aware
from mfd.storage.tables import alarms, machine_risk, predictions, readings

ALARM_LIMIT = 500  # unresolved alarms the page lists (the worst first)
TRENDS_BY_KEY = 100  # above this many machines, every trend is read in one scan


def fleet(engine: Engine, now: datetime, stale_after: timedelta) -> list[dict[str, Any]]:
    """Every machine's latest risk, threshold, last reading, time to failure (None until early warning gives one),
    whether it is stale, and its unresolved alarm's id and state; highest risk first."""
    m, a = machine_risk.c, alarms.c
    query = (
        sa.select(
            m.machine_id,
            m.machine_type,
            m.risk,
            m.threshold,
            m.rul_estimate,
            m.last_reading_id,
            m.last_timestamp,
            a.id.label("alarm_id"),
            a.state.label("alarm_state"),
        )
        .select_from(
            # The unresolved alarms by the state index (a few hundred rows), not all 100,000s by open_key.
            machine_risk.outerjoin(
                alarms, sa.and_(a.state.in_(ACTIVE), a.machine_id == m.machine_id, a.kind == RISK)
            )
        )
        .order_by(m.risk.desc(), m.machine_id)
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:
        row["last_timestamp"] = aware(row["last_timestamp"])
        row["stale"] = now - row["last_timestamp"] > stale_after
    return rows


def trends(engine: Engine, machines: list[str]) -> dict[str, str]:
    """The trend JSON ([[epoch seconds, risk], ...]) of the given machines (of all machines when most are
    asked for, as after a detection batch: one plain scan instead of an IN list of a thousand keys)."""
    found: dict[str, str] = {}
    with engine.connect() as conn:
        if len(machines) > TRENDS_BY_KEY:
            return dict(conn.execute(sa.select(machine_risk.c.machine_id, machine_risk.c.trend)).all())
        for i in range(0, len(machines), 1000):
            query = sa.select(machine_risk.c.machine_id, machine_risk.c.trend).where(
                machine_risk.c.machine_id.in_(machines[i : i + 1000])
            )
            found |= dict(conn.execute(query).all())
    return found


def alarm_list(engine: Engine, limit: int = ALARM_LIMIT) -> list[dict[str, Any]]:
    """Unresolved alarms: most severe first, then the unacknowledged, then the oldest."""
    a = alarms.c
    unacknowledged_first = sa.case((a.acknowledged_at.is_(None), 0), else_=1)
    query = (
        sa.select(alarms)
        .where(a.state.in_(ACTIVE))
        .order_by(a.severity.desc(), unacknowledged_first, a.opened_at, a.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
    for row in rows:  # top_features and nearest_rule stay JSON text: the renderer parses what it draws
        for col in ("opened_at", "first_seen", "last_seen", "acknowledged_at", "snoozed_until"):
            row[col] = aware(row[col]) if row[col] else None
    return rows


def alarm_risk(
    engine: Engine, alarm_id: int, margin: timedelta = timedelta(hours=1)
) -> tuple[dict[str, Any] | None, list[list[float]]]:
    """The alarm (None when there is no such id) and its machine's risk from `margin` before its first
    crossing to `margin` after its last: [[epoch seconds, risk], ...] (at most 2,000 points)."""
    a, r, p = alarms.c, readings.c, predictions.c
    with engine.connect() as conn:
        alarm = conn.execute(
            sa.select(a.machine_id, a.first_seen, a.last_seen, a.threshold, a.state).where(a.id == alarm_id)
        ).first()
        if alarm is None:
            return None, []
        query = (
            sa.select(r.timestamp, p.probability)
            .select_from(readings.join(predictions, p.reading_id == r.id))
            .where(
                r.machine_id == alarm.machine_id,
                r.timestamp.between(aware(alarm.first_seen) - margin, aware(alarm.last_seen) + margin),
            )
            .order_by(r.timestamp)
            .limit(2000)
        )
        points = [[aware(t).timestamp(), float(v)] for t, v in conn.execute(query)]
    return dict(alarm._mapping), points


def version(engine: Engine) -> tuple:
    """What the fleet and alarm tables show changed when this changed: machine_risk's newest update and
    its readings taken (sum of last reading ids), the unresolved alarms' number, newest update, total
    count and how many are acknowledged, snoozed or escalated. Two aggregates: ~1,000 machine rows, the
    unresolved alarms by the state index."""
    m, a = machine_risk.c, alarms.c
    with engine.connect() as conn:
        risk = conn.execute(sa.select(sa.func.max(m.updated_at), sa.func.sum(m.last_reading_id))).one()
        alarm = conn.execute(
            sa.select(
                sa.func.count(),
                sa.func.max(a.updated_at),
                sa.func.sum(a.count),
                sa.func.count(a.acknowledged_at),
                sa.func.count(a.snoozed_until),
                sa.func.count(a.escalated_at),
            ).where(a.state.in_(ACTIVE))
        ).one()
    return (*risk, *alarm)


@dataclass(frozen=True)
class Figures:
    alarms_by_state: dict[str, int]
    detection_lag_s: float
    readings_last_minute: int
    machines: int
    machines_stale: int


def figures(engine: Engine, now: datetime, stale_after: timedelta) -> Figures:
    """The metrics: unresolved alarms by state; detection lag (0 when every stored reading is scored,
    else the time since the newest prediction was written); readings whose time lies in the last minute;
    machines, and those silent longer than `stale_after`."""
    a, m, r, p = alarms.c, machine_risk.c, readings.c, predictions.c
    with engine.connect() as conn:
        by_state = dict(
            conn.execute(
                sa.select(a.state, sa.func.count()).where(a.state.in_(ACTIVE)).group_by(a.state)
            ).all()
        )
        newest_reading = conn.execute(sa.select(sa.func.max(r.id))).scalar()
        newest_scored = conn.execute(sa.select(sa.func.max(p.reading_id))).scalar()
        lag = 0.0
        if newest_reading is not None and (newest_scored or 0) < newest_reading:
            scored_at = None
            if newest_scored is not None:
                scored_at = conn.execute(sa.select(p.scored_at).where(p.reading_id == newest_scored)).scalar()
            since = (
                aware(scored_at)
                if scored_at
                else aware(conn.execute(sa.select(sa.func.min(r.timestamp))).scalar())
            )
            lag = max((now - since).total_seconds(), 0.0)
        recent = conn.execute(
            sa.select(sa.func.count()).where(r.timestamp > now - timedelta(minutes=1), r.timestamp <= now)
        ).scalar()
        machines, stale = conn.execute(
            sa.select(sa.func.count(), sa.func.count().filter(m.last_timestamp < now - stale_after))
        ).one()
    return Figures(
        alarms_by_state={s: int(by_state.get(s, 0)) for s in ACTIVE},
        detection_lag_s=lag,
        readings_last_minute=int(recent or 0),
        machines=int(machines or 0),
        machines_stale=int(stale or 0),
    )


def prometheus_text(f: Figures) -> str:
    """The figures in Prometheus' text format, names prefixed `mfd_`."""
    lines = [
        "# HELP mfd_alarms_open Unresolved alarms by state.",
        "# TYPE mfd_alarms_open gauge",
        *(f'mfd_alarms_open{{state="{s}"}} {n}' for s, n in f.alarms_by_state.items()),
        "# HELP mfd_detection_lag_seconds Seconds since the newest prediction while readings wait unscored (0 when none wait).",
        "# TYPE mfd_detection_lag_seconds gauge",
        f"mfd_detection_lag_seconds {f.detection_lag_s:.3f}",
        "# HELP mfd_readings_per_minute Readings whose time lies in the last minute.",
        "# TYPE mfd_readings_per_minute gauge",
        f"mfd_readings_per_minute {f.readings_last_minute}",
        "# HELP mfd_machines Machines with a scored reading.",
        "# TYPE mfd_machines gauge",
        f"mfd_machines {f.machines}",
        "# HELP mfd_machines_stale Machines silent longer than the console's stale-after setting.",
        "# TYPE mfd_machines_stale gauge",
        f"mfd_machines_stale {f.machines_stale}",
    ]
    return "\n".join(lines) + "\n"
