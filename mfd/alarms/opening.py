"""Opening and bumping alarms from scored readings. A reading crosses when its prediction's label is 1 (its
probability at or past the threshold of its machine type, `mfd.alerts.costs.DecisionPolicy`). A machine's
streak of consecutive crossings is kept in `machine_risk` across batches; at `debounce` an alarm opens
unless one of its kind is unresolved, which instead takes the crossings (count, peak risk, last seen).

`update_alarms` is the one entry point: batch detection, `mfd detect`, `mfd stream` and the `alarms` asset
hand it a scored frame. The per-reading work is numpy over the whole batch (streaks, per-machine maxima,
the trend's tail); the store sees a handful of set-based statements whatever the batch's size: the machines'
states read (and on PostgreSQL locked) once, their unresolved alarms read once, one multi-row upsert of
`machine_risk`, one multi-row UPDATE of the bumped alarms, one INSERT of the opened ones.

Idempotent per machine: readings at or below the machine's last reading taken are skipped, so a re-run
batch changes nothing. On PostgreSQL the machines' rows are locked for the transaction, so two batches of
one machine take turns."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alarms.batch import Batch, Plan, plan_batch
from mfd.alarms.model import DEFAULT_DEBOUNCE, RISK, AlarmUpdate, ensure_tables
from mfd.alarms.writes import active_alarms, machine_states, write_bumps, write_opens, write_risk
from mfd.alerts.costs import threshold_array
from mfd.schema import SEGMENT_COLUMN
from mfd.storage.copy import copy_select
from mfd.storage.tables import ensure_detection_tables, machine_risk, predictions, readings

TREND_POINTS = 60  # risk points per machine kept for the sparkline


def read_scored(engine: Engine, first_id: int, last_id: int) -> pd.DataFrame:
    """The predictions of readings first_id..last_id that `machine_risk` has not taken yet, with their
    machine, type, time (and `rul_estimate` where predictions has it), in reading-id order: what
    `update_alarms` takes. Readings already taken (detection called `update_alarms` itself) are not
    fetched, so the `alarms` asset after such a batch reads nothing."""
    ensure_detection_tables(engine)
    ensure_tables(engine)
    p, r, m = predictions.c, readings.c, machine_risk.c
    columns = {
        "reading_id": p.reading_id,
        "machine_id": r.machine_id,
        "machine_type": r[SEGMENT_COLUMN],
        "timestamp": r.timestamp,
        "probability": p.probability,
        "label": p.label,
        **({"rul_estimate": p.rul_estimate} if "rul_estimate" in p else {}),
    }
    source = predictions.join(readings, r.id == p.reading_id).outerjoin(
        machine_risk, m.machine_id == r.machine_id
    )
    where = sa.and_(
        p.reading_id.between(first_id, last_id),
        sa.or_(m.last_reading_id.is_(None), p.reading_id > m.last_reading_id),
    )
    if engine.dialect.name == "postgresql":  # one COPY (`mfd.storage.copy`): a backlog batch is 500k rows
        df = copy_select(engine, columns, source, where, [p.reading_id])
        return df.astype({"label": "int64", "machine_id": object, "machine_type": object})
    query = sa.select(*(c.label(n) for n, c in columns.items())).select_from(source).where(where)
    with engine.connect() as conn:
        df = pd.read_sql(query.order_by(p.reading_id), conn)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def _apply(conn: sa.Connection, batch: Batch, debounce: int, now: datetime) -> Plan:
    machines = batch.machines
    states = machine_states(conn, machines)
    active = active_alarms(conn, machines, RISK)
    plan = plan_batch(batch, states, active, debounce, TREND_POINTS)
    write_opens(conn, plan, RISK, now)
    write_bumps(conn, plan, now)
    write_risk(conn, plan, now)
    return plan


def update_alarms(
    engine: Engine,
    scored: pd.DataFrame,
    *,
    debounce: int = DEFAULT_DEBOUNCE,
    thresholds: Mapping[str, float] | None = None,
    now: datetime | None = None,
    conn: sa.Connection | None = None,
) -> AlarmUpdate:
    """Take a batch of scored readings into `machine_risk` and `alarms`, in one transaction: `conn`'s when
    given (detection's, so predictions and alarms commit together), else a new one on `engine`.

    `scored` needs reading_id, machine_id, timestamp, probability, label; it may carry machine_type,
    threshold (else from `thresholds` by machine type), rul_estimate, and the readings' sensors and
    top_features (else the few peak readings an alarm is explained by are read from the store)."""
    if debounce < 1:
        raise ValueError(f"debounce must be >= 1, got {debounce}")
    ensure_tables(engine)
    now, report = now or datetime.now(UTC), AlarmUpdate(readings=len(scored))
    if scored.empty:
        return report
    if thresholds and "machine_type" in scored and "threshold" not in scored:
        # A machine type without a threshold gets none (NaN): the reading's label decides.
        scored = scored.assign(threshold=threshold_array(scored["machine_type"], thresholds, math.nan))
    batch = Batch.of(scored)
    if conn is None:
        with engine.begin() as own:
            plan = _apply(own, batch, debounce, now)
    else:
        plan = _apply(conn, batch, debounce, now)
    return plan.report(report)
