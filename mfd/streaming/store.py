"""One micro-batch of the stream into the readings database, in one transaction: the readings (the bulk
writer; a key stored before is skipped), the champion's predictions of those of them not scored yet, their
failure events and alerts (as batch detection writes them: `mfd.detection.batches`, `mfd.alerts.outbox`)
and the rejections. A redelivered message finds its readings and predictions stored and writes nothing
twice: every row is keyed ((timestamp, machine_id), reading_id, message_key) and skipped on conflict."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alerts import outbox
from mfd.alerts.costs import DecisionPolicy
from mfd.detection.batches import EXPLAIN_LIMIT, explain_events
from mfd.modeling.model_io import FailureModel
from mfd.schema import KEY_COLUMNS, MACHINE_TYPES, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.storage.bulk import BulkWriter
from mfd.storage.pause import pause_point
from mfd.storage.tables import failure_events, predictions, readings, rejected_readings
from mfd.streaming.payloads import Rejection
from mfd.validation import READING_RULES

READING_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp", SEGMENT_COLUMN, *SENSOR_COLUMNS, "source")
_REJECTED = ("message_key", "topic", "reason", "payload")


@dataclass(frozen=True)
class Written:
    """What one micro-batch's transaction wrote."""

    readings: int  # new readings (a redelivered one is not new)
    scored: int  # new predictions
    failures: int
    rejected: int  # new rejections


def readings_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """The readings as a frame in the table's columns, one per key (the first of a repeated key)."""
    frame = pd.DataFrame.from_records(rows, columns=list(READING_COLUMNS))
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.astype({c: "float64" for c in SENSOR_COLUMNS})
    return frame.drop_duplicates(list(KEY_COLUMNS)).reset_index(drop=True)


def _unscored_ids(conn: sa.Connection, frame: pd.DataFrame) -> pd.DataFrame:
    """(machine_id, timestamp, id) of the stored readings with the frame's keys that have no prediction:
    one range scan of the (timestamp, machine_id) key over the batch's time span (a live batch spans
    seconds), narrowed to the batch's machines and joined to the frame's keys here (a tuple IN list of a
    thousand keys cost PostgreSQL ~1 s)."""
    query = (
        sa.select(readings.c.id, readings.c.machine_id, readings.c.timestamp)
        .where(readings.c.timestamp.between(frame["timestamp"].min(), frame["timestamp"].max()))
        .where(readings.c.machine_id.in_(sorted(set(frame["machine_id"]))))
        .where(~sa.exists().where(predictions.c.reading_id == readings.c.id))
    )
    found = pd.DataFrame(conn.execute(query).all(), columns=["id", "machine_id", "timestamp"])
    found["timestamp"] = pd.to_datetime(found["timestamp"], utc=True)
    return found.merge(frame[list(KEY_COLUMNS)], on=list(KEY_COLUMNS))


def _events(
    model: FailureModel, failed: pd.DataFrame, probability: np.ndarray, threshold: np.ndarray
) -> pd.DataFrame:
    events = failed[["id", "machine_id", "timestamp", "machine_type"]].assign(
        probability=probability,
        threshold=threshold,
        model_name=model.name,
        model_version=model.version,
    )
    return events.join(explain_events(model, failed, probability, EXPLAIN_LIMIT)).rename(
        columns={"id": "reading_id"}
    )


def warm_up(model: FailureModel) -> None:
    """Import SHAP and build the model's explainer now (~3 s), not in the first batch with a failure."""
    row = {c: (READING_RULES[c].range.low + READING_RULES[c].range.high) / 2 for c in SENSOR_COLUMNS}
    frame = pd.DataFrame([{"id": 0, "machine_id": "warm-up", SEGMENT_COLUMN: MACHINE_TYPES[0], **row}])
    frame["timestamp"] = pd.Timestamp.now(tz="UTC")
    explain_events(model, frame, np.array([1.0]), 1)


def score(model: FailureModel, policy: DecisionPolicy, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the champion's `probability`, the `threshold` of each reading's machine type and
    `label`; one model call (rows already validated by `mfd.streaming.payloads`)."""
    probability = model.probability_of_valid(frame)
    threshold = policy.threshold_for(frame[SEGMENT_COLUMN])
    return frame.assign(probability=probability, threshold=threshold, label=(probability >= threshold))


def write_micro_batch(
    engine: Engine,
    model: FailureModel,
    policy: DecisionPolicy,
    rows: list[dict[str, Any]],
    rejections: list[Rejection],
) -> Written:
    """Store and score one micro-batch in one transaction (see the module docstring). Call it under
    `threadpool_limits(1)`, as the consumer does: OpenMP threads on a busy host cost ~1 s a batch."""
    now = datetime.now(UTC)
    frame = readings_frame(rows)
    scored = score(model, policy, frame) if len(frame) else frame
    by = {"model_name": model.name, "model_version": model.version}
    new_readings = new_scores = failures = rejected = 0
    with engine.begin() as conn:
        if len(frame):
            new_readings = BulkWriter(conn, readings, READING_COLUMNS, conflict=KEY_COLUMNS).write_frame(
                frame
            )
            todo = _unscored_ids(conn, frame).merge(scored, on=["machine_id", "timestamp"])
            if len(todo):
                new_scores = BulkWriter(
                    conn,
                    predictions,
                    ("reading_id", "probability", "label"),
                    conflict=("reading_id",),
                    constants={**by, "scored_at": now},
                ).write_frame(todo.rename(columns={"id": "reading_id"}).astype({"label": "int8"}))
                failed = todo[todo["label"]].reset_index(drop=True)
                if len(failed):
                    events = _events(
                        model, failed, failed["probability"].to_numpy(), failed["threshold"].to_numpy()
                    )
                    failures = BulkWriter(
                        conn,
                        failure_events,
                        ("reading_id", "machine_id", "timestamp", "probability", "top_features"),
                        conflict=("reading_id",),
                        constants={**by, "detected_at": now},
                    ).write_frame(events)
                    outbox.enqueue(conn, events, now)
        if rejections:
            table = pd.DataFrame(
                [(r.key, r.topic, r.reason, r.payload) for r in rejections], columns=list(_REJECTED)
            ).drop_duplicates("message_key")
            rejected = BulkWriter(
                conn, rejected_readings, _REJECTED, conflict=("message_key",), constants={"received_at": now}
            ).write_frame(table)
        pause_point("stream-write")  # written, not committed
    pause_point("stream-commit")  # committed, not acknowledged
    return Written(new_readings, new_scores, failures, rejected)
