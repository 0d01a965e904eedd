"""Every table of the readings database: `readings`, `peripheral_readings`, `reading_revisions`, `predictions`,
`failure_events`, `maintenance_records`, `shadow_predictions`, `run_failures`, `alert_outbox`, `plant_profile`,
`rejected_readings`.

The readings and peripheral columns are the active profile's (`mfd.profiles`): a database holds one
profile's readings, recorded in `plant_profile` (`mfd.storage.readings` refuses another profile's)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.profiles import NO_SEGMENT
from mfd.schema import (
    FAILURE_MODE_COLUMNS,
    LABEL_COLUMN,
    MACHINE_TYPES,
    PERIPHERAL_VALUE_COLUMNS,
    PROFILE,
    SEGMENT_COLUMN,
    SENSOR_COLUMNS,
)

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
    # The profile's segment attribute (AI4I: L/M/H); a profile without one stores its single value NO_SEGMENT.
    sa.Column(
        SEGMENT_COLUMN,
        sa.String(max(len(v) for v in MACHINE_TYPES)),
        nullable=False,
        **({} if PROFILE.segment_column else {"server_default": NO_SEGMENT}),
    ),
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
    # Remaining useful life (the profile's time units); null where the model has no RUL head.
    sa.Column("rul_estimate", sa.Float, nullable=True),
)

failure_events = sa.Table(
    "failure_events",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("reading_id", _ID, nullable=False, unique=True),
    sa.Column("machine_id", sa.String(64), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("rul_estimate", sa.Float, nullable=True),  # as in predictions
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    # JSON list of {"feature", "value", "attribution"}, largest attribution first.
    sa.Column("top_features", sa.Text, nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False, index=True),
)


def ensure_detection_tables(engine: Engine) -> None:
    """Create `predictions`, `failure_events` and `shadow_predictions` if missing; add `rul_estimate` to
    the first two in a store made before it (once per engine and process)."""
    metadata.create_all(engine, tables=[predictions, failure_events, shadow_predictions])
    _add_rul_estimate(engine)


_RUL_CHECKED: set[str] = set()


def _add_rul_estimate(engine: Engine) -> None:
    """`ALTER TABLE ... ADD COLUMN rul_estimate` (a nullable float, same meaning on SQLite and PostgreSQL)
    where an older store lacks it."""
    key = engine.url.render_as_string(hide_password=True)
    if key in _RUL_CHECKED:
        return
    inspector = sa.inspect(engine)
    with engine.begin() as conn:
        for table in (predictions, failure_events):
            if "rul_estimate" not in {c["name"] for c in inspector.get_columns(table.name)}:
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN rul_estimate FLOAT')
    _RUL_CHECKED.add(key)


# Maintenance records (incoming/maintenance/*.csv): what a technician found on a machine, and when. They
# label the readings of that machine within a window before `timestamp` (`mfd.preparation.labels`).
maintenance_records = sa.Table(
    "maintenance_records",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("work_order_id", sa.String(64), nullable=False, unique=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),  # a failure mode (twf, hdf, ...) or no_fault
    sa.Column("source", sa.Text, nullable=True),
    sa.Index("maintenance_machine_time", "machine_id", "timestamp"),
)

# The challenger's scores beside the champion's (`mfd.detection.shadow`): one row per reading and model
# version, never a failure event.
shadow_predictions = sa.Table(
    "shadow_predictions",
    metadata,
    sa.Column("reading_id", _ID, primary_key=True, autoincrement=False),
    sa.Column("model_name", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(32), primary_key=True),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.SmallInteger, nullable=False),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
)

# Dagster runs that failed, recorded by run_failure_sensor (`mfd_sensors.retraining`).
run_failures = sa.Table(
    "run_failures",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("job_name", sa.String(256), nullable=False),
    sa.Column("trigger", sa.String(32), nullable=True),  # the run's mfd/trigger tag
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("failed_at", sa.DateTime(timezone=True), nullable=False),
)

# The alerts of failure events, written in the transaction that writes the events (`mfd.alerts.outbox`)
# and delivered to the webhooks at least once: a row stays `pending` until every target took it.
alert_outbox = sa.Table(
    "alert_outbox",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("idempotency_key", sa.String(128), nullable=False, unique=True),  # sent as Idempotency-Key
    sa.Column("reading_id", _ID, nullable=False, index=True),
    sa.Column("machine_id", sa.String(64), nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),  # the reading's: dedup window
    sa.Column("payload", sa.Text, nullable=False),  # JSON: the event with its explanation
    # pending, delivered, suppressed (another alert of the machine within the window), withdrawn
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_to", sa.Text, nullable=False),  # JSON list of the targets that took it
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("duplicate_of", _ID, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
)


def ensure_alert_tables(engine: Engine) -> None:
    """Create `failure_events` and `alert_outbox` if missing."""
    metadata.create_all(engine, tables=[failure_events, alert_outbox])


# The profile whose readings the database holds: one row (name, digest, the readings columns as JSON).
plant_profile = sa.Table(
    "plant_profile",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("columns", sa.Text, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
)


# Alarms (`mfd.alarms`): a machine's risk past its threshold for k consecutive readings opens one; later
# crossings bump it. `open_key` is `<machine>:<kind>` while the alarm is not resolved, NULL after: the unique
# key allows one unresolved alarm per machine and kind (NULLs never collide, on SQLite and PostgreSQL).
alarms = sa.Table(
    "alarms",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("open_key", sa.String(100), nullable=True, unique=True),
    sa.Column("state", sa.String(16), nullable=False),  # open, acknowledged, snoozed, resolved
    sa.Column("severity", sa.SmallInteger, nullable=False),  # 3 critical, 2 high, 1 warning (peak risk)
    sa.Column("count", sa.Integer, nullable=False),  # readings past the threshold it covers
    sa.Column("peak_risk", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("first_reading_id", _ID, nullable=False),
    sa.Column("last_reading_id", _ID, nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),  # reading times
    sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
    sa.Column("top_features", sa.Text, nullable=True),  # JSON, the peak reading's (failure_events)
    sa.Column("nearest_rule", sa.Text, nullable=True),  # JSON, None for a plant without physics rules
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("acknowledged_by", sa.String(128), nullable=True),
    sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("snoozed_until", sa.DateTime(timezone=True), nullable=True),
    sa.Column("escalated_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("resolved_by", sa.String(128), nullable=True),
    sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("alarms_state_order", "state", "severity", "opened_at"),
    sa.Index("alarms_machine", "machine_id"),
)

# Every change of an alarm (the audit trail): opened, acknowledged, snoozed, woke, escalated, resolved.
alarm_transitions = sa.Table(
    "alarm_transitions",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("alarm_id", _ID, nullable=False, index=True),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("from_state", sa.String(16), nullable=True),
    sa.Column("to_state", sa.String(16), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),  # JSON: until, outcome, note
)

# Each machine's latest risk as alarms see it (`mfd.alarms.opening`): the debounce streak, the last reading
# taken, a short trend for the console's sparkline, and `rul_estimate` (NULL until early warning fills it).
machine_risk = sa.Table(
    "machine_risk",
    metadata,
    sa.Column("machine_id", MachineId, primary_key=True),
    sa.Column("machine_type", sa.String(32), nullable=True),
    sa.Column("streak", sa.Integer, nullable=False),
    sa.Column("streak_first_id", _ID, nullable=True),  # the streak's first reading (it may span batches)
    sa.Column("streak_first_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_reading_id", _ID, nullable=False),
    sa.Column("last_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("risk", sa.Float, nullable=False),
    sa.Column("threshold", sa.Float, nullable=True),
    sa.Column("trend", sa.Text, nullable=False),  # JSON [[epoch seconds, risk], ...], oldest first
    sa.Column("rul_estimate", sa.Float, nullable=True),  # hours; the early-warning seam
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def ensure_alarm_tables(engine: Engine) -> None:
    """Create `alarms`, `alarm_transitions`, `machine_risk` and `maintenance_records` if missing."""
    metadata.create_all(engine, tables=[alarms, alarm_transitions, machine_risk, maintenance_records])


# MQTT messages and readings `mfd stream` refused (`mfd.streaming.payloads`): why, the topic and the raw
# payload (cut at 4,096 characters). `message_key` (payload digest and reading index) makes a redelivered
# message's rejection one row.
rejected_readings = sa.Table(
    "rejected_readings",
    metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column("message_key", sa.String(64), nullable=False, unique=True),
    sa.Column("topic", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
