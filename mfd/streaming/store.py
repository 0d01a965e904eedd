"""One micro-batch of the stream into the readings database, in one transaction: the readings (the bulk
writer; a key stored before is skipped), the champion's predictions of those of them not scored yet, their
failure events and alerts (as batch detection writes them: `mfd.detection.batches`, `mfd.alerts.outbox`)
and the rejections. A redelivered message finds its readings and predictions stored and writes nothing
twice: every row is keyed ((timestamp, machine_id), reading_id, message_key) and skipped on conflict.

The batch is scored before the transaction (`mfd.detection.batches.score_readings`, batch detection's
step) and its failures explained on a worker thread beside the COPY. On PostgreSQL the readings' ids are
drawn from the table's sequence first and sent with them, so when every key is new (the live case) the
ids of what to predict are known without reading anything back; only a batch with a stored key (a
redelivery) looks its keys up. `Written.scored` is every reading of the batch with its stored prediction
(new or from an earlier delivery): what the alarms take after the commit (`mfd.alarms`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alerts import outbox
from mfd.alerts.costs import DecisionPolicy
from mfd.detection.batches import explain_events, score_readings
from mfd.detection.history import with_window_features
from mfd.modeling.model_io import FailureModel
from mfd.schema import KEY_COLUMNS, MACHINE_TYPES, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.storage.bulk import BulkWriter
from mfd.storage.pause import pause_point
from mfd.storage.tables import failure_events, predictions, readings, rejected_readings
from mfd.streaming.payloads import READING_COLUMNS, Rejection
from mfd.validation import READING_RULES

_REJECTED = ("message_key", "topic", "reason", "payload")
EVERY_STORED_READING = np.iinfo(np.int64).max  # the window history: every stored reading before the batch
SCORED_COLUMNS = ("reading_id", "machine_id", "machine_type", "timestamp", "probability", "label")


@dataclass(frozen=True)
class Written:
    """What one micro-batch's transaction wrote, and the batch's scored readings (`SCORED_COLUMNS`)."""

    readings: int  # new readings (a redelivered one is not new)
    scored: int  # new predictions
    failures: int
    rejected: int  # new rejections
    scored_readings: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=SCORED_COLUMNS))


def readings_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The readings in the table's columns, one per key (the first of a repeated key)."""
    frame = frame[list(READING_COLUMNS)].copy()
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    frame = frame.astype({c: "float64" for c in SENSOR_COLUMNS})
    return frame.drop_duplicates(list(KEY_COLUMNS)).reset_index(drop=True)


def _allocate_ids(conn: sa.Connection, count: int) -> np.ndarray | None:
    """`count` new reading ids from the table's sequence (PostgreSQL), None elsewhere."""
    if conn.dialect.name != "postgresql" or not count:
        return None
    sql = "SELECT array_agg(nextval(pg_get_serial_sequence('readings', 'id'))) FROM generate_series(1, :n)"
    return np.array(conn.execute(sa.text(sql), {"n": count}).scalar_one(), dtype=np.int64)  # one row


def _stored(conn: sa.Connection, frame: pd.DataFrame) -> pd.DataFrame:
    """id, key and stored prediction (probability, label; NaN where none) of the stored readings with the
    frame's keys: one range scan of the (timestamp, machine_id) key over the batch's time span, narrowed to
    its machines and joined to its keys here (a tuple IN list of a thousand keys cost PostgreSQL ~1 s)."""
    r, p = readings.c, predictions.c
    query = (
        sa.select(r.id, r.machine_id, r.timestamp, p.probability, p.label)
        .select_from(readings.outerjoin(predictions, p.reading_id == r.id))
        .where(r.timestamp.between(frame["timestamp"].min(), frame["timestamp"].max()))
        .where(r.machine_id.in_(sorted(set(frame["machine_id"]))))
    )
    found = pd.DataFrame(
        conn.execute(query).all(), columns=["id", "machine_id", "timestamp", "probability", "label"]
    )
    found["timestamp"] = pd.to_datetime(found["timestamp"], utc=True)
    return found.astype({"probability": "float64", "label": "float64"}).merge(
        frame[list(KEY_COLUMNS)], on=list(KEY_COLUMNS)
    )


def warm_up(model: FailureModel) -> None:
    """Import SHAP and build the model's explainer now (~3 s), not in the first batch with a failure."""
    row = {c: (READING_RULES[c].range.low + READING_RULES[c].range.high) / 2 for c in SENSOR_COLUMNS}
    frame = pd.DataFrame([{"id": 0, "machine_id": "warm-up", SEGMENT_COLUMN: MACHINE_TYPES[0], **row}])
    frame["timestamp"] = pd.Timestamp.now(tz="UTC")
    explain_events(model, frame, np.array([1.0]), 1)


def score(engine: Engine, model: FailureModel, policy: DecisionPolicy, frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the champion's `probability`, the `threshold` of each reading's machine type, `label`
    and, for a model with a RUL head, `rul_estimate`: batch detection's steps on rows already validated
    (`mfd.streaming.payloads`), the profile's window features first (over each machine's stored readings
    before the batch, `mfd.detection.history`; none where the profile declares no windows)."""
    valid = with_window_features(engine, frame, EVERY_STORED_READING)
    probability, threshold, label = score_readings(model, policy, valid)
    rul = model.estimate_rul(valid) if len(valid) else None
    out = valid.assign(probability=probability, threshold=threshold, label=label)
    return out if rul is None else out.assign(rul_estimate=np.asarray(rul, dtype="float64"))


def _write_readings(conn: sa.Connection, scored: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """Insert the readings; (how many were new, the batch with `id` and the stored `probability`/`label`
    of readings scored before (NaN for those to predict now)."""
    ids = _allocate_ids(conn, len(scored))
    columns = READING_COLUMNS if ids is None else ("id", *READING_COLUMNS)
    frame = scored if ids is None else scored.assign(id=ids)
    new = BulkWriter(conn, readings, columns, conflict=KEY_COLUMNS).write_frame(frame)
    if ids is not None and new == len(frame):  # every key new: nothing stored before, nothing scored
        return new, frame.assign(stored_probability=np.nan, stored_label=np.nan)
    stored = _stored(conn, scored).rename(
        columns={"probability": "stored_probability", "label": "stored_label"}
    )
    # every key is stored now (new or before); the batch's index is kept for its explanations
    return new, scored.reset_index().merge(stored, on=list(KEY_COLUMNS)).set_index("index")


def _write_events(
    conn: sa.Connection, model: FailureModel, failed: pd.DataFrame, now: datetime, rul: tuple[str, ...]
) -> int:
    by = {"model_name": model.name, "model_version": model.version}
    events = failed.rename(columns={"id": "reading_id"}).assign(**by)
    written = BulkWriter(
        conn,
        failure_events,
        ("reading_id", "machine_id", "timestamp", "probability", "top_features", *rul),
        conflict=("reading_id",),
        constants={**by, "detected_at": now},
    ).write_frame(events)
    outbox.enqueue(conn, events, now)
    return written


def _write_rejections(conn: sa.Connection, rejections: list[Rejection], now: datetime) -> int:
    if not rejections:
        return 0
    table = pd.DataFrame(
        [(r.key, r.topic, r.reason, r.payload) for r in rejections], columns=list(_REJECTED)
    ).drop_duplicates("message_key")
    return BulkWriter(
        conn, rejected_readings, _REJECTED, conflict=("message_key",), constants={"received_at": now}
    ).write_frame(table)


def write_micro_batch(
    engine: Engine,
    model: FailureModel,
    policy: DecisionPolicy,
    rows: pd.DataFrame,
    rejections: list[Rejection],
) -> Written:
    """Store and score one micro-batch in one transaction (see the module docstring). Call it under
    `threadpool_limits(1)`, as the consumer does: OpenMP threads on a busy host cost ~1 s a batch."""
    now = datetime.now(UTC)
    scored = score(engine, model, policy, readings_frame(rows))
    rul = ("rul_estimate",) if "rul_estimate" in scored else ()
    alarm = scored["label"].to_numpy(dtype=bool)
    new_readings = new_scores = failures = 0
    out = pd.DataFrame(columns=SCORED_COLUMNS)
    with ThreadPoolExecutor(1, thread_name_prefix="mfd-stream-explain") as pool:
        explained = pool.submit(explain_events, model, scored[alarm], scored["probability"].to_numpy()[alarm])
        with engine.begin() as conn:
            if len(scored):
                new_readings, batch = _write_readings(conn, scored)
                todo = batch[batch["stored_probability"].isna()]
                new_scores = BulkWriter(
                    conn,
                    predictions,
                    ("reading_id", "probability", "label", *rul),
                    conflict=("reading_id",),
                    constants={"model_name": model.name, "model_version": model.version, "scored_at": now},
                ).write_frame(todo.rename(columns={"id": "reading_id"}).astype({"label": "int8"}))
                failed = todo[todo["label"]].join(explained.result(), how="inner")
                if len(failed):
                    failures = _write_events(conn, model, failed, now, rul)
                out = _scored_readings(batch)
            rejected = _write_rejections(conn, rejections, now)
            pause_point("stream-write")  # written, not committed
    pause_point("stream-commit")  # committed, not acknowledged
    return Written(new_readings, new_scores, failures, rejected, out)


def _scored_readings(batch: pd.DataFrame) -> pd.DataFrame:
    """Every reading of the batch with its prediction: the new one, or the one stored before (whose
    `rul_estimate`, where the model has a RUL head, is not read back: NaN)."""
    earlier = batch["stored_probability"].notna()
    out = pd.DataFrame(
        {
            "reading_id": batch["id"].astype("int64"),
            "machine_id": batch["machine_id"],
            "machine_type": batch[SEGMENT_COLUMN],
            "timestamp": batch["timestamp"],
            "probability": np.where(earlier, batch["stored_probability"], batch["probability"]),
            "label": np.where(earlier, batch["stored_label"], batch["label"]).astype("int8"),
        }
    )
    if "rul_estimate" in batch:
        out["rul_estimate"] = np.where(earlier, np.nan, batch["rul_estimate"])
    return out.sort_values("reading_id", ignore_index=True)
