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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alarms.model import DEFAULT_DEBOUNCE, OPEN, RISK, SYSTEM, aware, ensure_tables, open_key, severity
from mfd.alerts.rules import nearest_rules
from mfd.schema import SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.storage.tables import (
    alarm_transitions,
    alarms,
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
    """The predictions of readings first_id..last_id with their machine, type and time, in reading-id
    order: what `update_alarms` takes (it reads the sensors and top features of the few peak readings
    it explains itself)."""
    ensure_detection_tables(engine)
    p, r = predictions.c, readings.c
    query = (
        sa.select(
            p.reading_id,
            r.machine_id,
            r[SEGMENT_COLUMN].label("machine_type"),
            r.timestamp,
            p.probability,
            p.label,
        )
        .select_from(predictions.join(readings, r.id == p.reading_id))
        .where(p.reading_id.between(first_id, last_id))
        .order_by(p.reading_id)
    )
    with engine.connect() as conn:
        df = pd.read_sql(query, conn)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def _peak_details(conn: sa.Connection, reading_ids: list[int]) -> pd.DataFrame:
    """Sensors and top features (NULL where not explained) of the given readings, by reading id."""
    r, f = readings.c, failure_events.c
    query = (
        sa.select(r.id.label("reading_id"), f.top_features, *(r[c] for c in SENSOR_COLUMNS))
        .select_from(readings.join(failure_events, f.reading_id == r.id, isouter=True))
        .where(r.id.in_(reading_ids))
    )
    result = conn.execute(query)
    return pd.DataFrame(result.all(), columns=list(result.keys())).set_index("reading_id", drop=False)


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


@dataclass
class _Batch:
    """The batch as arrays, in reading-id order (row-wise pandas access costs ~1 ms per machine)."""

    frame: pd.DataFrame
    reading_id: np.ndarray
    machine_id: np.ndarray
    probability: np.ndarray
    crossed: np.ndarray
    ns: np.ndarray  # reading times, ns since the epoch (UTC)
    machine_type: np.ndarray | None
    threshold: np.ndarray | None

    @classmethod
    def of(cls, scored: pd.DataFrame) -> _Batch:
        frame = scored.sort_values("reading_id", kind="stable").reset_index(drop=True)
        optional = {c: frame[c].to_numpy() if c in frame else None for c in ("machine_type", "threshold")}
        return cls(
            frame=frame,
            reading_id=frame["reading_id"].to_numpy(dtype=np.int64),
            machine_id=frame["machine_id"].astype(str).to_numpy(),
            probability=frame["probability"].to_numpy(dtype=float),
            crossed=frame["label"].to_numpy() == 1,
            ns=pd.to_datetime(frame["timestamp"], utc=True).astype("int64").to_numpy(),
            **optional,
        )

    def time(self, i: int) -> datetime:
        return pd.Timestamp(int(self.ns[i]), tz=UTC).to_pydatetime()

    def groups(self) -> list[tuple[str, np.ndarray]]:
        """(machine, its row positions in reading order), machines in order of first appearance."""
        codes, uniques = pd.factorize(self.machine_id)
        order = np.argsort(codes, kind="stable")
        bounds = np.flatnonzero(np.diff(codes[order])) + 1
        return [(str(uniques[codes[g[0]]]), g) for g in np.split(order, bounds)]


def _explain(conn: sa.Connection, batch: _Batch, rows: list[int]) -> dict[int, dict[str, Any]]:
    """Risk and explanation of the given peak rows: top features (when explained), the nearest rule; the
    sensors and features come with the batch or are read for these readings only."""
    if not rows:
        return {}
    frame = batch.frame.iloc[rows]
    if not all(c in frame for c in (*SENSOR_COLUMNS, "top_features")):
        details = _peak_details(conn, [int(i) for i in batch.reading_id[rows]])
        frame = (
            frame[[c for c in frame if c == "reading_id" or c not in details]].join(
                details.drop(columns="reading_id"), on="reading_id"
            )
            if len(details)
            else frame
        )
    known = (
        frame[list(SENSOR_COLUMNS)].notna().all(axis=1) if all(c in frame for c in SENSOR_COLUMNS) else None
    )
    rules: list[Any] = [None] * len(rows)
    if known is not None and known.any():
        found = iter(nearest_rules(frame[known.to_numpy()]))
        rules = [next(found) if k else None for k in known.to_numpy()]
    features = frame["top_features"].to_numpy() if "top_features" in frame else [None] * len(rows)
    return {
        i: {
            "peak_risk": float(batch.probability[i]),
            "top_features": f if isinstance(f, str) else None,
            "nearest_rule": json.dumps(r, default=float) if r else None,
        }
        for i, f, r in zip(rows, features, rules, strict=True)
    }


@dataclass
class _Plan:
    """What one batch does to the alarms: new ones (machine, counted rows, count, streak start) and bumps
    (active alarm, counted rows)."""

    opens: list[tuple[str, np.ndarray, int, tuple[int, datetime] | None]] = field(default_factory=list)
    bumps: list[tuple[dict[str, Any], np.ndarray]] = field(default_factory=list)


def _streak_since(prior: Any) -> tuple[int, datetime] | None:
    if prior is None or not prior["streak"] or prior["streak_first_id"] is None:
        return None
    return int(prior["streak_first_id"]), prior["streak_first_at"]


def _plan_machine(
    plan: _Plan,
    batch: _Batch,
    machine_id: str,
    rows: np.ndarray,
    run: np.ndarray,
    active: Any,
    prior: Any,
    k: int,
) -> None:
    crossed = batch.crossed[rows]
    if not crossed.any():
        return
    if active is not None:
        plan.bumps.append((dict(active), rows[crossed]))
        return
    due = np.flatnonzero(run >= k)
    if not len(due):
        return
    i = int(due[0])
    start = i - int(run[i]) + 1  # below 0: the streak began in an earlier batch
    count = int(run[i]) + int(crossed[i + 1 :].sum())
    since = _streak_since(prior) if start < 0 else None
    tail = rows[max(start, 0) :]
    plan.opens.append((machine_id, tail[crossed[max(start, 0) :]], count, since))


def _peak(batch: _Batch, counted: np.ndarray) -> int:
    return int(counted[np.argmax(batch.probability[counted])])


def _write_opens(conn: sa.Connection, batch: _Batch, plan: _Plan, kind: str, now: datetime) -> None:
    if not plan.opens:
        return
    why = _explain(conn, batch, [_peak(batch, counted) for _, counted, _, _ in plan.opens])
    rows = []
    for machine_id, counted, count, since in plan.opens:
        first, last, peak = int(counted[0]), int(counted[-1]), why[_peak(batch, counted)]
        first_id, first_seen = since or (int(batch.reading_id[first]), batch.time(first))
        threshold = None if batch.threshold is None else float(batch.threshold[last])
        rows.append(
            {
                "machine_id": machine_id,
                "kind": kind,
                "open_key": open_key(machine_id, kind),
                "state": OPEN,
                "severity": severity(peak["peak_risk"]),
                "count": count,
                "threshold": None if threshold is None or np.isnan(threshold) else threshold,
                "first_reading_id": first_id,
                "last_reading_id": int(batch.reading_id[last]),
                "first_seen": aware(first_seen),
                "last_seen": batch.time(last),
                "opened_at": now,
                "updated_at": now,
                **peak,
            }
        )
    inserted = conn.execute(alarms.insert().returning(alarms.c.id, sort_by_parameter_order=True), rows)
    transitions = [
        {
            "alarm_id": int(alarm_id),
            "action": "opened",
            "from_state": None,
            "to_state": OPEN,
            "actor": SYSTEM,
            "at": now,
            "detail": json.dumps({"count": row["count"]}),
        }
        for (alarm_id,), row in zip(inserted.all(), rows, strict=True)
    ]
    conn.execute(alarm_transitions.insert(), transitions)


def _write_bumps(conn: sa.Connection, batch: _Batch, plan: _Plan, now: datetime) -> None:
    higher = [(a, c) for a, c in plan.bumps if batch.probability[c].max() > float(a["peak_risk"])]
    why = _explain(conn, batch, [_peak(batch, c) for _, c in higher])
    plain, peaked = [], []
    for alarm, counted in plan.bumps:
        values = {
            "key": alarm["id"],
            "count": int(alarm["count"]) + len(counted),
            "last_reading_id": int(batch.reading_id[counted[-1]]),
            "last_seen": batch.time(int(counted[-1])),
            "updated_at": now,
        }
        peak = (
            why.get(_peak(batch, counted))
            if batch.probability[counted].max() > float(alarm["peak_risk"])
            else None
        )
        if peak is None:
            plain.append(values)
        else:
            peaked.append(values | peak | {"severity": severity(peak["peak_risk"])})
    for group in (plain, peaked):
        if group:
            columns = {c: sa.bindparam(c) for c in group[0] if c != "key"}
            conn.execute(alarms.update().where(alarms.c.id == sa.bindparam("key")).values(**columns), group)


def _active(conn: sa.Connection, machines: list[str], kind: str) -> dict[str, sa.RowMapping]:
    found: dict[str, sa.RowMapping] = {}
    for i in range(0, len(machines), _CHUNK):
        keys = [open_key(m, kind) for m in machines[i : i + _CHUNK]]
        found |= {
            r["machine_id"]: r
            for r in conn.execute(sa.select(alarms).where(alarms.c.open_key.in_(keys))).mappings()
        }
    return found


def _risk_row(
    batch: _Batch, machine_id: str, rows: np.ndarray, run: np.ndarray, prior: Any, now: datetime
) -> dict:
    last, start = int(rows[-1]), len(rows) - int(run[-1])
    if run[-1] == 0:
        since: tuple[int | None, Any] = (None, None)
    elif start >= 0:
        since = (int(batch.reading_id[rows[start]]), batch.time(int(rows[start])))
    else:
        since = _streak_since(prior) or (None, None)
    points = json.loads(prior["trend"]) if prior is not None else []
    points += [
        [int(t), round(float(p), 4)]
        for t, p in zip(batch.ns[rows] // 10**9, batch.probability[rows], strict=True)
    ]
    threshold = None if batch.threshold is None else float(batch.threshold[last])
    return {
        "machine_id": machine_id,
        "machine_type": None if batch.machine_type is None else str(batch.machine_type[last]),
        "streak": int(run[-1]),
        "streak_first_id": since[0],
        "streak_first_at": since[1],
        "last_reading_id": int(batch.reading_id[last]),
        "last_timestamp": batch.time(last),
        "risk": float(batch.probability[last]),
        "threshold": None if threshold is None or np.isnan(threshold) else threshold,
        "trend": json.dumps(points[-TREND_POINTS:]),
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
    ensure_tables(engine)
    now, report = now or datetime.now(UTC), AlarmUpdate(readings=len(scored))
    if scored.empty:
        return report
    if thresholds and "machine_type" in scored:
        scored = scored.assign(threshold=scored["machine_type"].map(thresholds).astype(float))
    batch, plan, risk_rows, taken = _Batch.of(scored), _Plan(), [], 0
    groups = batch.groups()
    with engine.begin() as conn:
        states = _states(conn, [m for m, _ in groups])
        active = _active(conn, [m for m, _ in groups], RISK)
        for machine_id, rows in groups:
            prior = states.get(machine_id)
            if prior is not None:
                rows = rows[batch.reading_id[rows] > prior["last_reading_id"]]
            if not len(rows):
                continue
            report.crossings += int(batch.crossed[rows].sum())
            taken += len(rows)
            run = streaks(batch.crossed[rows], prior["streak"] if prior is not None else 0)
            _plan_machine(plan, batch, machine_id, rows, run, active.get(machine_id), prior, debounce)
            risk_rows.append(_risk_row(batch, machine_id, rows, run, prior, now))
        _write_opens(conn, batch, plan, RISK, now)
        _write_bumps(conn, batch, plan, now)
        _write_risk(conn, risk_rows, set(states))
    report.skipped, report.machines = len(batch.reading_id) - taken, len(risk_rows)
    report.opened, report.bumped = len(plan.opens), len(plan.bumps)
    return report
