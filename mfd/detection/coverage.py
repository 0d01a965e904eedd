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

from mfd.detection.batches import BATCH_COLUMNS, invalid_reasons
from mfd.storage.readings import read_frame
from mfd.storage.tables import predictions, readings


@dataclass(frozen=True)
class Unscored:
    """Valid readings with timestamps in [since, until) and no prediction."""

    count: int
    first_ids: list[int]
    since: datetime
    until: datetime


def unscored_readings(
    engine: Engine, older_than: timedelta, lookback: timedelta, now: datetime | None = None
) -> Unscored:
    """Valid readings whose timestamp is older than `older_than` (but within `lookback` before that) with
    no row in `predictions`; one indexed range scan on the (timestamp, machine_id) key."""
    until = (now or datetime.now(UTC)) - older_than
    since = until - lookback
    scored = sa.select(predictions.c.reading_id).where(predictions.c.reading_id == readings.c.id)
    query = (
        sa.select(*(readings.c[c] for c in BATCH_COLUMNS))
        .where(readings.c.timestamp >= since, readings.c.timestamp < until, ~sa.exists(scored))
        .order_by(readings.c.id)
    )
    rows = read_frame(engine, query)
    valid = rows[invalid_reasons(rows).isna().to_numpy()]
    return Unscored(len(valid), valid["id"].head(20).astype(int).tolist(), since, until)
