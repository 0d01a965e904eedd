"""Every table of the readings database: `readings`, `peripheral_readings`, `reading_revisions`, `predictions`,
`failure_events`."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, PERIPHERAL_VALUE_COLUMNS, SENSOR_COLUMNS

metadata = sa.MetaData()

_ID = sa.BigInteger().with_variant(sa.Integer, "sqlite")
# Byte-order comparisons for machine ids on PostgreSQL: the unique key is maintained on every loaded row,
# and locale-aware collations cost several times more per comparison.
MachineId = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")

readings = sa.Table(
    "readings",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("machine_type", sa.String(1), nullable=False),
    *(sa.Column(c, sa.Float, nullable=False) for c in SENSOR_COLUMNS),
    sa.Column(LABEL_COLUMN, sa.SmallInteger, nullable=True),
    *(sa.Column(c, sa.SmallInteger, nullable=True) for c in FAILURE_MODE_COLUMNS),
    sa.Column("source", sa.Text, nullable=True),  # the object key: any S3 key (up to 1024 bytes)
    # Time first: readings arrive roughly in time order, so new keys land at the right edge of the index.
    sa.UniqueConstraint("timestamp", "machine_id", name="readings_time_machine_key"),
)

peripheral_readings = sa.Table(
    "peripheral_readings",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    *(sa.Column(c, sa.Float, nullable=False) for c in PERIPHERAL_VALUE_COLUMNS),
    sa.Column("source", sa.Text, nullable=True),
    sa.UniqueConstraint("timestamp", "machine_id", name="peripheral_time_machine_key"),
)

# The values a stored row had before a corrected file replaced them (MFD_CONFLICT_POLICY=replace).
reading_revisions = sa.Table(
    "reading_revisions",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("table_name", sa.String(64), nullable=False),  # readings or peripheral_readings
    sa.Column("reading_id", _ID, nullable=False, index=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("old_values", sa.Text, nullable=False),  # JSON {column: value} of the columns replaced
    sa.Column("old_source", sa.Text, nullable=True),
    sa.Column("revised_by", sa.Text, nullable=True),  # the file whose values replaced them
    sa.Column("revised_at", sa.DateTime(timezone=True), nullable=False),
)

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
