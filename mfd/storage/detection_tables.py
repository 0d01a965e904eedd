"""The `predictions` and `failure_events` tables, in the readings database beside `readings`."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.storage.readings import metadata

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("reading_id", _ID, primary_key=True, autoincrement=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
)

failure_events = sa.Table(
    "failure_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("reading_id", _ID, nullable=False, unique=True),
    sa.Column("machine_id", sa.String(64), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    # JSON list of {"feature", "value", "attribution"}, largest attribution first.
    sa.Column("top_features", sa.Text, nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def ensure_detection_tables(engine: Engine) -> None:
    """Create `predictions` and `failure_events` if missing."""
    metadata.create_all(engine, tables=[predictions, failure_events])
