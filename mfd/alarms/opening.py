"""Opening and bumping alarms from scored readings. A reading crosses when its prediction's label is 1 (its
probability at or past the threshold of its machine type, `mfd.alerts.costs.DecisionPolicy`). A machine's
streak of consecutive crossings is kept in `machine_risk` across batches; at `debounce` an alarm opens
unless one of its kind is unresolved, which instead takes the crossings (count, peak risk, last seen).

Idempotent per machine: readings at or below the machine's last reading taken are skipped, so a re-run
batch changes nothing. On PostgreSQL the machines' rows are locked for the transaction, so two batches of
one machine take turns."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alarms.model import DEFAULT_DEBOUNCE, OPEN, RISK, SYSTEM, open_key, record, severity
from mfd.alerts.rules import nearest_rules
from mfd.schema import SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.storage.tables import (
    alarms,
    ensure_alarm_tables,
    ensure_detection_tables,
    failure_events,
    machine_risk,
    predictions,
    readings,
)

TREND_POINTS = 60  # risk points per machine kept for the sparkline
_CHUNK = 500  # machines per IN list


@dataclass
class AlarmUpdate:
    """What one call did."""

    readings: int = 0
    skipped: int = 0  # already taken (a re-run)
    crossings: int = 0
    opened: int = 0
    bumped: int = 0
    machines: int = 0


def read_scored(engine: Engine, first_id: int, last_id: int) -> pd.DataFrame:
    """The predictions of readings first_id..last_id with their machine, type, time, sensors and (for
    predicted failures) top features, in reading-id order: what `update_alarms` takes."""
    ensure_detection_tables(engine)
    p, r, f = predictions.c, readings.c, failure_events.c
    query = (
        sa.select(
            p.reading_id,
            r.machine_id,
            r[SEGMENT_COLUMN].label("machine_type"),
            r.timestamp,
            p.probability,
            p.label,
            f.top_features,
            *(r[c] for c in SENSOR_COLUMNS),
        )
        .select_from(
            predictions.join(readings, r.id == p.reading_id).join(
                failure_events, f.reading_id == p.reading_id, isouter=True
            )
        )
        .where(p.reading_id.between(first_id, last_id))
        .order_by(p.reading_id)
    )
    with engine.connect() as conn:
        df = pd.read_sql(query, conn)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def streaks(labels: np.ndarray, start: int) -> np.ndarray:
    """Consecutive crossings ending at each reading, continuing a streak of `start` before them."""
    out, run = np.empty(len(labels), dtype=np.int64), int(start)
    for i, crossed in enumerate(labels):
        run = run + 1 if crossed else 0
        out[i] = run
    return out


def _states(conn: sa.Connection, machines: Iterable[str]) -> dict[str, sa.RowMapping]:
    found: dict[str, sa.RowMapping] = {}
    ids = [str(m) for m in machines]
    for i in range(0, len(ids), _CHUNK):
        query = sa.select(machine_risk).where(machine_risk.c.machine_id.in_(ids[i : i + _CHUNK]))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found |= {row["machine_id"]: row for row in conn.execute(query).mappings()}
    return found


def _why(rows: pd.DataFrame) -> dict[str, Any]:
    """The peak reading's risk and explanation: top features (when explained) and the nearest rule."""
    peak = rows.loc[[rows["probability"].idxmax()]]
    features = peak["top_features"].iloc[0] if "top_features" in peak else None
    rule = nearest_rules(peak)[0] if all(c in peak for c in SENSOR_COLUMNS) else None
    return {
        "peak_risk": float(peak["probability"].iloc[0]),
        "top_features": features if isinstance(features, str) else None,
        "nearest_rule": json.dumps(rule, default=float) if rule else None,
    }


def _open(
    conn: sa.Connection,
    machine_id: str,
    kind: str,
    counted: pd.DataFrame,
    count: int,
    now: datetime,
    since: tuple[int, datetime] | None,
) -> None:
    """Insert the alarm; `since` is the streak's first reading when it began in an earlier batch."""
    why = _why(counted)
    first_id, first_seen = since or (int(counted["reading_id"].iloc[0]), counted["timestamp"].iloc[0])
    values = {
        "machine_id": machine_id,
        "kind": kind,
        "open_key": open_key(machine_id, kind),
        "state": OPEN,
        "severity": severity(why["peak_risk"]),
        "count": int(count),
        "threshold": float(counted["threshold"].iloc[-1]) if "threshold" in counted else None,
        "first_reading_id": first_id,
        "last_reading_id": int(counted["reading_id"].iloc[-1]),
        "first_seen": pd.Timestamp(first_seen).to_pydatetime(),
        "last_seen": counted["timestamp"].iloc[-1].to_pydatetime(),
        "opened_at": now,
        "updated_at": now,
        **why,
    }
    alarm_id = conn.execute(alarms.insert().values(**values)).inserted_primary_key[0]
    record(conn, int(alarm_id), "opened", None, OPEN, SYSTEM, now, {"count": int(count)})


def _bump(conn: sa.Connection, active: sa.RowMapping, counted: pd.DataFrame, now: datetime) -> None:
    values: dict[str, Any] = {
        "count": int(active["count"]) + len(counted),
        "last_reading_id": int(counted["reading_id"].iloc[-1]),
        "last_seen": counted["timestamp"].iloc[-1].to_pydatetime(),
        "updated_at": now,
    }
    if float(counted["probability"].max()) > float(active["peak_risk"]):
        values |= _why(counted)
        values["severity"] = severity(values["peak_risk"])
    conn.execute(alarms.update().where(alarms.c.id == active["id"]).values(**values))


def _streak_since(prior: Any) -> tuple[int, datetime] | None:
    if prior is None or not prior["streak"] or prior["streak_first_id"] is None:
        return None
    return int(prior["streak_first_id"]), prior["streak_first_at"]


def _take(
    conn: sa.Connection,
    machine_id: str,
    rows: pd.DataFrame,
    run: np.ndarray,
    debounce: int,
    now: datetime,
    prior: Any,
) -> str | None:
    """Open or bump the machine's alarm for its crossings in `rows`: 'opened', 'bumped' or None."""
    crossed = rows["label"].to_numpy() == 1
    if not crossed.any():
        return None
    key = open_key(machine_id, RISK)
    active = conn.execute(sa.select(alarms).where(alarms.c.open_key == key)).mappings().first()
    if active is not None:
        _bump(conn, active, rows[crossed], now)
        return "bumped"
    due = np.flatnonzero(run >= debounce)
    if not len(due):
        return None
    i = int(due[0])
    start = i - int(run[i]) + 1  # below 0: the streak began in an earlier batch
    count = int(run[i]) + int(crossed[i + 1 :].sum())
    since = _streak_since(prior) if start < 0 else None
    _open(conn, machine_id, RISK, rows.iloc[max(start, 0) :][crossed[max(start, 0) :]], count, now, since)
    return "opened"


def _trend(previous: str | None, rows: pd.DataFrame) -> str:
    points = json.loads(previous) if previous else []
    seconds = rows["timestamp"].astype("int64") // 10**9
    points += [[int(t), round(float(p), 4)] for t, p in zip(seconds, rows["probability"], strict=True)]
    return json.dumps(points[-TREND_POINTS:])


def _risk_row(machine_id: str, rows: pd.DataFrame, run: np.ndarray, prior: Any, now: datetime) -> dict:
    last, start = rows.iloc[-1], len(rows) - int(run[-1])
    if run[-1] == 0:
        since: tuple[int | None, Any] = (None, None)
    elif start >= 0:
        since = (int(rows["reading_id"].iloc[start]), rows["timestamp"].iloc[start].to_pydatetime())
    else:
        since = _streak_since(prior) or (None, None)
    return {
        "machine_id": machine_id,
        "machine_type": str(last["machine_type"]) if "machine_type" in rows else None,
        "streak": int(run[-1]),
        "streak_first_id": since[0],
        "streak_first_at": since[1],
        "last_reading_id": int(last["reading_id"]),
        "last_timestamp": last["timestamp"].to_pydatetime(),
        "risk": float(last["probability"]),
        "threshold": float(last["threshold"]) if "threshold" in rows else None,
        "trend": _trend(prior["trend"] if prior is not None else None, rows),
        "updated_at": now,
    }


def _write_risk(conn: sa.Connection, rows: list[dict], known: set[str]) -> None:
    new = [r for r in rows if r["machine_id"] not in known]
    old = [{**r, "key": r["machine_id"]} for r in rows if r["machine_id"] in known]
    if new:
        conn.execute(machine_risk.insert(), new)
    if old:
        columns = {c: sa.bindparam(c) for c in old[0] if c not in ("key", "machine_id")}
        conn.execute(
            machine_risk.update().where(machine_risk.c.machine_id == sa.bindparam("key")).values(**columns),
            old,
        )


def update_alarms(
    engine: Engine,
    scored: pd.DataFrame,
    *,
    debounce: int = DEFAULT_DEBOUNCE,
    thresholds: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> AlarmUpdate:
    """Take a batch of scored readings (columns of `read_scored`; at least reading_id, machine_id,
    timestamp, probability, label) into `machine_risk` and `alarms`, in one transaction."""
    if debounce < 1:
        raise ValueError(f"debounce must be >= 1, got {debounce}")
    ensure_alarm_tables(engine)
    now, report = now or datetime.now(UTC), AlarmUpdate(readings=len(scored))
    if scored.empty:
        return report
    scored = scored.sort_values("reading_id", kind="stable")
    if thresholds and "machine_type" in scored:
        scored = scored.assign(threshold=scored["machine_type"].map(thresholds).astype(float))
    with engine.begin() as conn:
        states, risk_rows = _states(conn, scored["machine_id"].unique()), []
        for machine_id, rows in scored.groupby("machine_id", sort=False):
            prior = states.get(str(machine_id))
            if prior is not None:
                rows = rows[rows["reading_id"] > prior["last_reading_id"]]
                report.skipped += int((scored["machine_id"] == machine_id).sum()) - len(rows)
            if rows.empty:
                continue
            run = streaks(rows["label"].to_numpy() == 1, prior["streak"] if prior is not None else 0)
            report.crossings += int((rows["label"] == 1).sum())
            done = _take(conn, str(machine_id), rows, run, debounce, now, prior)
            report.opened += done == "opened"
            report.bumped += done == "bumped"
            risk_rows.append(_risk_row(str(machine_id), rows, run, prior, now))
        _write_risk(conn, risk_rows, set(states))
        report.machines = len(risk_rows)
    return report
