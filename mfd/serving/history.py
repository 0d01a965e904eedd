"""`/predict`'s window features (`mfd.windows`, where the profile declares windows): a request's readings of
one machine are its recent history, in list order (or by `timestamp` where given), and each reading is scored
with the features of its window over them; or, given only a machine id, the machine's latest stored reading
is scored with the history detection would read (`mfd.detection.history`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.detection.batches import BATCH_COLUMNS, read_batch
from mfd.detection.history import with_window_features
from mfd.features import WINDOW_SPEC, add_windows
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.profiles import MACHINE, TIMESTAMP
from mfd.storage.tables import readings as readings_table

_BASE_COLUMNS: tuple[str, ...] = tuple(c for c in MODEL_INPUT_COLUMNS if c in BATCH_COLUMNS)
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


def request_frame(readings: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Validated `/predict` readings as the model's input frame, in request order; with the window
    features over each named machine's readings of the request (readings naming no machine: one machine).
    A reading without `timestamp` takes its place in the list."""
    if WINDOW_SPEC is None:
        return pd.DataFrame.from_records(readings, columns=list(MODEL_INPUT_COLUMNS))
    frame = pd.DataFrame.from_records(readings, columns=[MACHINE, TIMESTAMP, *_BASE_COLUMNS])
    frame[MACHINE] = frame[MACHINE].fillna("").astype(str)
    listed = _EPOCH + pd.to_timedelta(range(len(frame)), unit="s")
    given = pd.to_datetime(frame[TIMESTAMP], utc=True, format="ISO8601")
    frame[TIMESTAMP] = given.fillna(pd.Series(listed, index=frame.index))
    return add_windows(frame)


def latest_reading(engine: Engine, machine: str) -> pd.DataFrame:
    """The machine's latest stored reading (one row, empty when it has none) with its window features over
    the stored history before it."""
    query = (
        sa.select(readings_table.c.id)
        .where(readings_table.c.machine_id == machine)
        .order_by(readings_table.c.timestamp.desc(), readings_table.c.id.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        last = conn.execute(query).scalar()
    if last is None:
        return pd.DataFrame(columns=list(BATCH_COLUMNS))
    return with_window_features(engine, read_batch(engine, int(last), int(last)), int(last))
