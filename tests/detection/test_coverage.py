"""unscored_readings counts in the database what invalid_reasons would leave valid (a backlog is a count,
never read into the run): unscored valid readings only, invalid ones (out of range, unknown category;
the table refuses a missing sensor) never, scored ones never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from mfd import validation
from mfd.detection.batches import invalid_reasons, read_batch
from mfd.detection.coverage import unscored_readings
from mfd.generator import generate_readings
from mfd.schema import SENSOR_COLUMNS
from mfd.storage import readings as store
from mfd.storage.tables import ensure_detection_tables, predictions
from mfd.validation import READING_RULES


def test_unscored_valid_readings_are_counted_in_the_database_like_invalid_reasons(readings_url: str) -> None:
    engine = store.create_engine(readings_url)
    store.ensure_tables(engine)
    ensure_detection_tables(engine)
    frame = generate_readings(machines=4, rows=200, seed=3)
    now = datetime.now(UTC)
    frame["timestamp"] = [now - timedelta(hours=2) + timedelta(seconds=i) for i in range(len(frame))]
    sensor = SENSOR_COLUMNS[0]
    category, _ = next(iter(validation.categories(READING_RULES).items()))
    frame.loc[10, sensor] = READING_RULES[sensor].range.high + 1  # out of range
    frame.loc[11, SENSOR_COLUMNS[-1]] = READING_RULES[SENSOR_COLUMNS[-1]].range.low - 1  # below its range
    frame.loc[12, category] = "?"
    store.insert_readings(engine, frame)
    batch = read_batch(engine, 1, 10**9)
    valid_ids = batch.loc[invalid_reasons(batch).isna(), "id"].astype(int).tolist()
    assert len(valid_ids) == 197
    with engine.begin() as conn:
        conn.execute(
            predictions.insert(),
            [
                {
                    "reading_id": i,
                    "model_name": "m",
                    "model_version": "1",
                    "probability": 0.1,
                    "label": 0,
                    "scored_at": now,
                }
                for i in valid_ids[:50]
            ],
        )
    got = unscored_readings(engine, timedelta(minutes=10), timedelta(hours=6), now=now)
    assert got.count == 147 and got.first_ids == valid_ids[50:70]
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar() == 50
