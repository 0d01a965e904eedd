"""The same readings' machine-window features by the three routes, in one process of a profile with windows
(the profile is per process: run with MFD_PROFILE=cmapss): the training set (`build_training_set`),
detection (id-range batches with the history read from the store: `with_window_features`) and `/predict`
(a request listing a machine's readings: `request_frame`; a machine id only: `latest_reading`), each
against the batch form over every machine's whole history. Prints one JSON line; the test asserts on it.

Run: MFD_PROFILE=cmapss python tests/detection/feature_routes.py <sqlite file>
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd

from mfd.detection.batches import read_batch
from mfd.detection.history import with_window_features
from mfd.features import WINDOW_COLUMNS, add_windows
from mfd.preparation.training_set import build_training_set
from mfd.profiles import MACHINE, SEGMENT, TIMESTAMP
from mfd.schema import LABEL_COLUMN, MACHINE_TYPES, PROFILE, SENSOR_COLUMNS
from mfd.serving.history import latest_reading, request_frame
from mfd.serving.readings import READING_FIELDS, parse_readings
from mfd.storage import readings as store
from mfd.storage.tables import maintenance_records
from mfd.validation import READING_RULES

START = pd.Timestamp("2024-01-01", tz="UTC")
MACHINES, READINGS, RESET_AFTER = 3, 70, 40  # machine m1 is maintained after its 40th reading


def fleet() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Readings interleaved across machines (so id order is not machine order) and m1's record."""
    rng = np.random.default_rng(7)
    rows = []
    for i in range(READINGS):
        for m in range(MACHINES):
            row = {MACHINE: f"m{m}", TIMESTAMP: START + pd.Timedelta(hours=i), SEGMENT: MACHINE_TYPES[0]}
            for column in SENSOR_COLUMNS:
                r = READING_RULES[column].range
                row[column] = float(np.round(rng.uniform(r.low, r.high) * 0.5 + (r.low + r.high) * 0.25, 4))
            rows.append(row)
    resets = pd.DataFrame({MACHINE: ["m1"], TIMESTAMP: [START + pd.Timedelta(hours=RESET_AFTER - 1)]})
    return pd.DataFrame(rows), resets


def differences(got: pd.DataFrame, reference: pd.DataFrame) -> tuple[int, float]:
    """Rows compared and the largest absolute difference of their window features (by machine and time)."""
    key = [MACHINE, TIMESTAMP]
    joined = (
        got[[*key, *WINDOW_COLUMNS]]
        .astype({MACHINE: str})
        .merge(reference[[*key, *WINDOW_COLUMNS]], on=key, suffixes=("", "_ref"), validate="one_to_one")
    )
    a = joined[list(WINDOW_COLUMNS)].to_numpy(dtype=float)
    b = joined[[f"{c}_ref" for c in WINDOW_COLUMNS]].to_numpy(dtype=float)
    return len(joined), float(np.max(np.abs(a - b))) if len(joined) else float("nan")


def detection(engine, ids: np.ndarray, sizes: list[int]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Window features of every stored reading, batch by batch; and the last batch's without its history."""
    parts, at, last = [], 0, None
    for size in [*sizes, len(ids)]:
        if at >= len(ids):
            break
        first, end = int(ids[at]), int(ids[min(at + size, len(ids)) - 1])
        batch = read_batch(engine, first, end)
        parts.append(with_window_features(engine, batch, first))
        last, at = batch, at + size
    return pd.concat(parts, ignore_index=True), add_windows(last)


def request(frame: pd.DataFrame) -> list[dict[str, object]]:
    """`frame`'s readings as a client sends them: the profile's source names, the machine, no timestamps."""
    fields = [*READING_FIELDS, MACHINE]
    return [{PROFILE.source_name(c): row[c] for c in fields} for row in frame[fields].to_dict("records")]


def main(path: str) -> None:
    readings, resets = fleet()
    reference = add_windows(readings, resets)
    engine = store.create_engine(f"sqlite:///{path}")
    store.ensure_tables(engine)
    store.insert_readings(engine, readings)
    with engine.begin() as conn:
        conn.execute(
            maintenance_records.insert(),
            [
                {
                    "work_order_id": "wo-1",
                    "machine_id": "m1",
                    "timestamp": resets[TIMESTAMP][0],
                    "outcome": "failure",
                }
            ],
        )
    out = {}
    labelled = readings.assign(**{LABEL_COLUMN: 0})
    empty = pd.DataFrame(columns=[MACHINE, TIMESTAMP])
    out["training"] = differences(build_training_set(labelled, empty, "0s", resets), reference)
    ids = store.read_readings(engine)["id"].to_numpy()
    scored, alone = detection(engine, ids, [37, 50, 1, 60])
    out["detection"] = differences(scored, reference)
    out["detection_without_history"] = differences(alone, reference)
    life = readings[readings[MACHINE].eq("m1") & (readings[TIMESTAMP] > resets[TIMESTAMP][0])]
    listed = [readings[readings[MACHINE] == "m2"], life]
    sent = [
        request_frame(parse_readings(request(f), 1_000)).assign(**{TIMESTAMP: f[TIMESTAMP].to_numpy()})
        for f in listed
    ]
    out["predict_list"] = differences(pd.concat(sent, ignore_index=True), reference)
    out["predict_machine"] = differences(latest_reading(engine, "m1"), reference)
    out["unknown_machine_rows"] = len(latest_reading(engine, "nobody"))
    out["columns"] = len(WINDOW_COLUMNS)
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
