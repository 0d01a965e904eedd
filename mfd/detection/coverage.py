"""Readings that should have a prediction by now and have none: the proof that nothing is left unscored.

Age is the reading's own timestamp (the table keeps no arrival time), so a backfill of old readings counts
as unscored until the prediction sensor has caught up with it. Invalid readings are never scored, so they
are not counted here (the `valid_readings` check counts them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd import validation
from mfd.schema import SENSOR_COLUMNS
from mfd.storage.tables import predictions, readings
from mfd.validation import READING_RULES


@dataclass(frozen=True)
class Unscored:
    """Valid readings with timestamps in [since, until) and no prediction."""

    count: int
    first_ids: list[int]
    since: datetime
    until: datetime


def _valid() -> list[sa.ColumnElement[bool]]:
    """`mfd.detection.batches.invalid_reasons` as SQL: every category allowed, every sensor present and in
    range (a NULL fails IN and BETWEEN, as NaN does; PostgreSQL sorts NaN above every number)."""
    clauses = [readings.c[col].in_(allowed) for col, allowed in validation.categories(READING_RULES).items()]
    for col in SENSOR_COLUMNS:
        rng = READING_RULES[col].range
        clauses.append(readings.c[col].between(rng.low, rng.high))
    return clauses


def unscored_readings(
    engine: Engine, older_than: timedelta, lookback: timedelta, now: datetime | None = None
) -> Unscored:
    """Valid readings whose timestamp is older than `older_than` (but within `lookback` before that) with
    no row in `predictions`; one indexed range scan on the (timestamp, machine_id) key, counted in the
    database: a backlog of millions is a count, never read into the run (issue 24: 10-20 s a backlog run)."""
    until = (now or datetime.now(UTC)) - older_than
    since = until - lookback
    scored = sa.select(predictions.c.reading_id).where(predictions.c.reading_id == readings.c.id)
    where = (readings.c.timestamp >= since, readings.c.timestamp < until, ~sa.exists(scored), *_valid())
    with engine.connect() as conn:
        count = conn.execute(sa.select(sa.func.count()).select_from(readings).where(*where)).scalar()
        first = conn.execute(sa.select(readings.c.id).where(*where).order_by(readings.c.id).limit(20))
        first_ids = [int(i) for i in first.scalars()]
    return Unscored(int(count or 0), first_ids, since, until)
