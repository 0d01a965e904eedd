"""What the console shows, read in a few indexed queries: the fleet (one row per machine from
`machine_risk`, with its unresolved alarm), the unresolved alarms in the order people work them, one
alarm's risk around it, and the figures `/metrics` exports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from mfd.alarms.model import ACTIVE, RISK, aware
from mfd.storage.tables import alarms, machine_risk, predictions, readings

ALARM_LIMIT = 500  # unresolved alarms the page lists (the worst first)
TRENDS_BY_KEY = 100  # above this many machines, every trend is read in one scan


Source = Engine | Connection  # the store, or a connection of `reading` the page's reads share


@contextmanager
def reading(source: Source) -> Iterator[Connection]:
    """A connection for the page's reads (`source` itself when it is one); on PostgreSQL without parallel
    workers (SET LOCAL: this read's transaction only). Starting them costs more than these scans of a
    thousand-odd rows, which the planner overestimates many times on tables bloated by the batches'
    updates."""
    if isinstance(source, Connection):
        yield source
        return
    with source.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL max_parallel_workers_per_gather = 0")
        yield conn


def fleet(
    engine: Source, now: datetime, stale_after: timedelta, trends_after: int | None = None
) -> list[dict[str, Any]]:
    """Every machine's latest risk, threshold, last reading, time to failure (None until early warning gives one),
    whether it is stale, and its unresolved alarm's id and state; highest risk first. `trend`: the trend JSON
    of the machines whose last reading id is above `trends_after` (of all when None), else None: after a
    detection batch the same query reads the trends that changed and only those."""
    m, a = machine_risk.c, alarms.c
    trend = m.trend if trends_after is None else sa.case((m.last_reading_id > trends_after, m.trend))
    columns = (m.machine_type, m.risk, m.threshold, m.rul_estimate, m.last_reading_id, m.last_timestamp)
    query = sa.select(m.machine_id, *columns, trend.label("trend")).order_by(m.risk.desc(), m.machine_id)
    # The unresolved alarms by the state index (a few hundred rows), joined here: a join in SQL was
    # planned as a nested loop over the machines once the batches' updates had bloated machine_risk.
    active = sa.select(a.machine_id, a.id, a.state).where(a.state.in_(ACTIVE), a.kind == RISK)
    with reading(engine) as conn:
        rows = conn.execute(query).all()
        unresolved = {name: (i, state) for name, i, state in conn.execute(active)}
    out, none, silent_since = [], (None, None), now - stale_after
    for name, mtype, risk, threshold, rul, last, at, trend in rows:
        at = aware(at)
        alarm_id, alarm_state = unresolved.get(name, none)
        out.append(
            {
                "machine_id": name,
                "machine_type": mtype,
                "risk": risk,
                "threshold": threshold,
                "rul_estimate": rul,
                "last_reading_id": last,
                "last_timestamp": at,
                "trend": trend,
                "alarm_id": alarm_id,
                "alarm_state": alarm_state,
                "stale": at < silent_since,
            }
        )
    return out


def trends(engine: Source, machines: list[str]) -> dict[str, tuple[int, str]]:
    """The given machines' last reading id and trend JSON ([[epoch seconds, risk], ...]), for those whose
    trend `fleet` did not return (a last reading id at or below the cursor: rare). Keys in IN lists of up
    to 1,000; above `TRENDS_BY_KEY` machines one plain scan of all of them."""
    m = machine_risk.c
    found: dict[str, tuple[int, str]] = {}
    with reading(engine) as conn:
        if len(machines) > TRENDS_BY_KEY:
            rows = conn.execute(sa.select(m.machine_id, m.last_reading_id, m.trend)).all()
            return {name: (int(last), text) for name, last, text in rows}
        for i in range(0, len(machines), 1000):
            query = sa.select(m.machine_id, m.last_reading_id, m.trend).where(
                m.machine_id.in_(machines[i : i + 1000])
            )
            found |= {name: (int(last), text) for name, last, text in conn.execute(query)}
    return found


def alarm_list(engine: Source, limit: int = ALARM_LIMIT) -> list[dict[str, Any]]:
    """Unresolved alarms: most severe first, then the unacknowledged, then the oldest."""
    a = alarms.c
    unacknowledged_first = sa.case((a.acknowledged_at.is_(None), 0), else_=1)
    query = (
        sa.select(alarms)
        .where(a.state.in_(ACTIVE))
        .order_by(a.severity.desc(), unacknowledged_first, a.opened_at, a.id)
        .limit(limit)
    )
    with reading(engine) as conn:
        rows = [dict(r) for r in conn.execute(query).mappings().all()]
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


def version(engine: Source) -> tuple:
    """What the fleet and alarm tables show changed when this changed: machine_risk's newest update and
    its readings taken (sum of last reading ids), the unresolved alarms' number, newest update, total
    count and how many are acknowledged, snoozed or escalated. Two aggregates: ~1,000 machine rows, the
    unresolved alarms by the state index."""
    m, a = machine_risk.c, alarms.c
    with reading(engine) as conn:
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


def figures(engine: Source, now: datetime, stale_after: timedelta) -> Figures:
    """The metrics: unresolved alarms by state; detection lag (0 when every stored reading is scored,
    else the time since the newest prediction was written); readings whose time lies in the last minute;
    machines, and those silent longer than `stale_after`."""
    a, m, r, p = alarms.c, machine_risk.c, readings.c, predictions.c
    with reading(engine) as conn:
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
