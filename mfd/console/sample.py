"""A synthetic scored fleet for the console's tests and bench: readings in the active profile's columns
(sensors mid-range), their predictions (a risk that ramps per machine) and, for readings past the threshold,
failure events with top features, as detection would have written them; then alarms from them through
`mfd.alarms.update_alarms`, the path detection takes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alarms import read_scored, update_alarms
from mfd.schema import MACHINE_TYPES, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.storage.readings import insert_readings
from mfd.storage.tables import ensure_detection_tables, failure_events, predictions, readings
from mfd.validation import READING_RULES

MODEL = ("sample-model", "1")


@dataclass(frozen=True)
class SampleFleet:
    machines: int = 20
    readings_per_machine: int = 12
    threshold: float = 0.5
    step: timedelta = timedelta(minutes=1)
    seed: int = 0


def machine_names(count: int) -> list[str]:
    return [f"M{i:04d}" for i in range(count)]


def peak_risks(fleet: SampleFleet) -> np.ndarray:
    """Each machine's last-reading risk: distinct values spread over 0.02..0.99 (shuffled by the seed)."""
    risks = np.linspace(0.02, 0.99, fleet.machines)
    return np.random.default_rng(fleet.seed).permutation(risks)


def sample_readings(fleet: SampleFleet, end: datetime) -> pd.DataFrame:
    """Readings of every machine, `readings_per_machine` each, the last at `end`; time-major order."""
    n, per = fleet.machines, fleet.readings_per_machine
    times = [end - fleet.step * (per - 1 - j) for j in range(per)]
    names = machine_names(n)
    df = pd.DataFrame(
        {
            "machine_id": np.tile(names, per),
            "timestamp": pd.to_datetime(np.repeat(times, n), utc=True),
            SEGMENT_COLUMN: np.tile([MACHINE_TYPES[i % len(MACHINE_TYPES)] for i in range(n)], per),
        }
    )
    for col in SENSOR_COLUMNS:
        rng = READING_RULES[col].range
        df[col] = (rng.low + rng.high) / 2.0
    return df


def _scores(stored: pd.DataFrame, fleet: SampleFleet) -> pd.DataFrame:
    """Risk ramping to the machine's peak over its readings; label at the threshold."""
    peak = dict(zip(machine_names(fleet.machines), peak_risks(fleet), strict=True))
    position = stored.groupby("machine_id").cumcount() + 1
    ramp = (position / fleet.readings_per_machine) ** 0.25
    probability = (stored["machine_id"].map(peak) * ramp).clip(0.0, 1.0)
    return pd.DataFrame(
        {
            "reading_id": stored["id"].to_numpy(),
            "probability": probability.to_numpy(),
            "label": (probability >= fleet.threshold).astype(int).to_numpy(),
        }
    )


def _features(values: pd.Series) -> str:
    return json.dumps(
        [
            {"feature": col, "value": float(values[col]), "attribution": round(0.4 / (k + 1), 3)}
            for k, col in enumerate(SENSOR_COLUMNS[:3])
        ]
    )


def write_scores(engine: Engine, stored: pd.DataFrame, fleet: SampleFleet, now: datetime) -> pd.DataFrame:
    """Predictions of `stored` readings (and failure events of those past the threshold), as detection."""
    ensure_detection_tables(engine)
    scores = _scores(stored, fleet)
    rows = scores.assign(model_name=MODEL[0], model_version=MODEL[1], scored_at=now)
    failed = stored.assign(**scores.drop(columns="reading_id").to_dict("series"))[
        scores["label"].to_numpy() == 1
    ]
    events = [
        {
            "reading_id": int(r["id"]),
            "machine_id": r["machine_id"],
            "timestamp": r["timestamp"].to_pydatetime(),
            "probability": float(r["probability"]),
            "model_name": MODEL[0],
            "model_version": MODEL[1],
            "top_features": _features(r),
            "detected_at": now,
        }
        for _, r in failed.iterrows()
    ]
    with engine.begin() as conn:
        conn.execute(predictions.insert(), rows.to_dict("records"))
        if events:
            conn.execute(failure_events.insert(), events)
    return scores


def seed_fleet(engine: Engine, fleet: SampleFleet, end: datetime | None = None, debounce: int = 3) -> None:
    """Readings, predictions, failure events and the alarms they open, the newest reading at `end`."""
    end = end or datetime.now(UTC)
    after = _max_id(engine)
    insert_readings(engine, sample_readings(fleet, end), source="sample")
    with engine.connect() as conn:
        stored = pd.read_sql(
            sa.select(
                readings.c.id,
                readings.c.machine_id,
                readings.c.timestamp,
                *(readings.c[c] for c in SENSOR_COLUMNS),
            )
            .where(readings.c.id > after)
            .order_by(readings.c.id),
            conn,
        )
    stored["timestamp"] = pd.to_datetime(stored["timestamp"], utc=True)
    write_scores(engine, stored, fleet, end)
    thresholds = dict.fromkeys(MACHINE_TYPES, fleet.threshold)
    scored = read_scored(engine, int(stored["id"].min()), int(stored["id"].max()))
    update_alarms(engine, scored, debounce=debounce, thresholds=thresholds, now=end)


def _max_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(readings.c.id), 0))).scalar_one())
