"""The statements `update_alarms` sends, each set-based whatever the batch's size: the machines' states
(locked on PostgreSQL, in machine order so two batches never deadlock) and unresolved alarms read by key;
the opened alarms inserted in one multi-row INSERT with their audit rows; the bumps as one executemany
(pipelined by psycopg); `machine_risk` as one multi-row upsert (INSERT ... ON CONFLICT DO UPDATE)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from mfd.alarms.batch import Batch, Plan
from mfd.alarms.model import OPEN, SYSTEM, aware, open_key, severity
from mfd.alerts.rules import nearest_rules
from mfd.schema import SENSOR_COLUMNS
from mfd.storage.tables import alarm_transitions, alarms, failure_events, machine_risk, readings

_CHUNK = 1000  # keys per IN list, rows per multi-row statement


def _chunks(items: list[Any]) -> list[list[Any]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def _key_in(column: sa.Column, keys: list[str], conn: sa.Connection) -> sa.ColumnElement[bool]:
    """`column IN keys`: on PostgreSQL `= ANY(<one array parameter>)`, a short statement psycopg parses
    once (an IN list of a thousand placeholders cost more to parse than to run)."""
    if conn.dialect.name == "postgresql":
        return column == sa.any_(sa.bindparam("keys", keys, type_=postgresql.ARRAY(sa.Text)))
    return column.in_(keys)


def machine_states(conn: sa.Connection, machines: list[str]) -> dict[str, sa.RowMapping]:
    """The machines' machine_risk rows (streak, last reading taken, trend), locked on PostgreSQL."""
    m = machine_risk.c
    columns = (m.machine_id, m.streak, m.streak_first_id, m.streak_first_at, m.last_reading_id, m.trend)
    found: dict[str, sa.RowMapping] = {}
    for chunk in _chunks(sorted(machines)):
        query = sa.select(*columns).where(_key_in(m.machine_id, chunk, conn)).order_by(m.machine_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        found |= {row["machine_id"]: row for row in conn.execute(query).mappings()}
    return found


def active_alarms(conn: sa.Connection, machines: list[str], kind: str) -> dict[str, sa.RowMapping]:
    """The machines' unresolved alarms of `kind` (id, peak risk), by the unique open key."""
    a = alarms.c
    found: dict[str, sa.RowMapping] = {}
    for chunk in _chunks([open_key(m, kind) for m in machines]):
        query = sa.select(a.id, a.machine_id, a.peak_risk).where(_key_in(a.open_key, chunk, conn))
        found |= {row["machine_id"]: row for row in conn.execute(query).mappings()}
    return found


def _details(conn: sa.Connection, ids: list[int], sensors: bool, features: bool) -> pd.DataFrame:
    """Sensors and/or top features (NULL where not explained) of the given readings."""
    r, f = readings.c, failure_events.c
    columns = [r.id.label("reading_id")]
    columns += [f.top_features] if features else []
    columns += [r[c] for c in SENSOR_COLUMNS] if sensors else []
    source = readings.join(failure_events, f.reading_id == r.id, isouter=True) if features else readings
    result = conn.execute(sa.select(*columns).select_from(source).where(r.id.in_(ids)))
    return pd.DataFrame(result.all(), columns=list(result.keys()))


def explain(conn: sa.Connection, batch: Batch, rows: list[int]) -> dict[int, dict[str, Any]]:
    """Risk and "why" of the given sorted rows (peak readings): top SHAP features (when explained) and
    the nearest physics rule (where the profile has physics). Sensors and features come with the batch
    or are read for these readings only."""
    if not rows:
        return {}
    frame = batch.frame.iloc[batch.pos[rows]].reset_index(drop=True)
    sensors = not all(c in frame for c in SENSOR_COLUMNS)
    features = "top_features" not in frame
    if sensors or features:
        details = _details(conn, [int(batch.reading_id[i]) for i in rows], sensors, features)
        frame = frame.merge(details, on="reading_id", how="left")
    known = frame[list(SENSOR_COLUMNS)].notna().all(axis=1).to_numpy()
    found: list[Any] = [None] * len(rows)
    if known.any():
        hits = iter(nearest_rules(frame[known]))
        found = [next(hits) if k else None for k in known]
    return {
        i: {
            "peak_risk": float(batch.probability[i]),
            "top_features": f if isinstance(f, str) else None,
            "nearest_rule": json.dumps(rule, default=float) if rule else None,
        }
        for i, f, rule in zip(rows, frame["top_features"].to_numpy(), found, strict=True)
    }


def write_opens(conn: sa.Connection, plan: Plan, kind: str, now: datetime) -> None:
    """Insert the plan's new alarms (explained by their peak reading) and an `opened` row each."""
    if not plan.opens:
        return
    why = explain(conn, plan.batch, [o["peak"] for o in plan.opens])
    rows = [
        {
            **{k: v for k, v in o.items() if k not in ("peak", "peak_risk")},
            **why[o["peak"]],
            "kind": kind,
            "open_key": open_key(o["machine_id"], kind),
            "state": OPEN,
            "severity": severity(o["peak_risk"]),
            "first_seen": aware(o["first_seen"]),
            "opened_at": now,
            "updated_at": now,
        }
        for o in plan.opens
    ]
    inserted = conn.execute(alarms.insert().returning(alarms.c.id, sort_by_parameter_order=True), rows)
    audit = [
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
    conn.execute(alarm_transitions.insert(), audit)


def write_bumps(conn: sa.Connection, plan: Plan, now: datetime) -> None:
    """Add the batch's crossings to the unresolved alarms (count + n, last seen; at a new peak its risk,
    severity and "why"): one executemany per shape."""
    if not plan.bumps:
        return
    why = explain(conn, plan.batch, [b["peak"] for b in plan.bumps if b["peak"] is not None])
    plain, peaked = [], []
    for b in plan.bumps:
        values = {
            "key": b["id"],
            "n": b["crossings"],
            "last_reading_id": b["last_reading_id"],
            "last_seen": b["last_seen"],
        }
        if b["peak"] is None:
            plain.append(values)
        else:
            peak = why[b["peak"]]
            peaked.append(values | peak | {"severity": severity(peak["peak_risk"])})
    a = alarms.c
    for group in (plain, peaked):
        if group:
            columns = {c: sa.bindparam(c) for c in group[0] if c not in ("key", "n")}
            statement = (
                alarms.update()
                .where(a.id == sa.bindparam("key"))
                .values(count=a.count + sa.bindparam("n"), updated_at=now, **columns)
            )
            conn.execute(statement, group)


def _array_type(column: sa.Column) -> str:
    """The PostgreSQL array type a column's values are sent as (unnest casts them to the column's)."""
    if isinstance(column.type, sa.DateTime):
        return "timestamptz[]"
    if isinstance(column.type, sa.Float):
        return "float8[]"
    if isinstance(column.type, sa.Integer):
        return "int8[]"
    return "text[]"


def _upsert_risk_pg(conn: sa.Connection, rows: list[dict[str, Any]], changed: list[str]) -> None:
    """One INSERT ... SELECT FROM unnest(<one array per column>) ON CONFLICT DO UPDATE: a fixed statement
    (parsed once by psycopg and the server) whatever the number of machines."""
    names = list(rows[0])
    arrays = ", ".join(f"%({c})s::{_array_type(machine_risk.c[c])}" for c in names)
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in changed)
    sql = (
        f"INSERT INTO machine_risk ({', '.join(names)}) SELECT * FROM unnest({arrays}) "
        f"ON CONFLICT (machine_id) DO UPDATE SET {updates}"
    )
    conn.exec_driver_sql(sql, {c: [row[c] for row in rows] for c in names})


def write_risk(conn: sa.Connection, plan: Plan, now: datetime) -> None:
    """Upsert the batch's machine_risk rows; `rul_estimate` is overwritten only when the batch had one."""
    if not plan.risk:
        return
    rows = [{**row, "updated_at": now} for row in plan.risk]
    kept = {"machine_id"} | (set() if plan.batch.rul is not None else {"rul_estimate"})
    changed = [c for c in rows[0] if c not in kept]
    if conn.dialect.name == "postgresql":
        _upsert_risk_pg(conn, rows, changed)
        return
    insert = sqlite.insert(machine_risk)
    statement = insert.on_conflict_do_update(
        index_elements=[machine_risk.c.machine_id], set_={c: insert.excluded[c] for c in changed}
    )
    for chunk in _chunks(rows):
        conn.execute(statement, chunk)
