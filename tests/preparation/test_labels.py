"""Maintenance labels end to end: records ingested from incoming/maintenance/ label the readings within the
window before them, and training_set uses them beside the readings' own labels (real PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from mfd.preparation.labels import (
    FROM_MAINTENANCE,
    FROM_READING,
    apply_maintenance_labels,
    count_labelled,
    label_window,
)
from mfd.storage.objects import LocalObjects
from mfd_assets.preparation import maintenance_records, training_set
from mfd_resources import LocalObjectStore, ReadingsStore

T = pd.Timestamp("2026-05-01 10:00", tz="UTC")


def reading(machine: str, minutes: int, label: int | None = None) -> dict:
    return {
        "machine_id": machine,
        "timestamp": T + pd.Timedelta(minutes=minutes),
        "machine_type": "L",
        "air_temperature_k": 300.0,
        "process_temperature_k": 310.0,
        "rotational_speed_rpm": 1500.0,
        "torque_nm": 40.0,
        "tool_wear_min": 10.0,
        "machine_failure": label,
    }


READINGS = pd.DataFrame(
    [
        reading("M-1", -90),  # before the window of the 10:15 record: stays unlabelled
        reading("M-1", -30),  # in [09:15, 10:15]: twf
        reading("M-1", 0),  # in the window: twf
        reading("M-1", 10, label=0),  # in the window but labelled by its reading: keeps 0
        reading("M-1", 60),  # after the record: unlabelled
        reading("M-2", 0),  # no_fault at 10:30: label 0
        reading("M-2", 5, label=1),  # own label
        reading("M-3", 0),  # no record: unlabelled
    ]
)
MAINTENANCE_CSV = (
    "machine_id,timestamp,outcome,work_order_id\n"
    "M-1,2026-05-01T10:15:00Z,twf,WO-1\n"
    "M-2,2026-05-01T10:30:00Z,no_fault,WO-2\n"
    "M-7,2026-05-01T10:30:00Z,hdf,WO-3\n"  # unknown machine: refused, labels nothing
)
EXPECTED = {  # minutes after T per machine -> (label, source, twf)
    ("M-1", -30): (1, FROM_MAINTENANCE, 1),
    ("M-1", 0): (1, FROM_MAINTENANCE, 1),
    ("M-1", 10): (0, FROM_READING, pd.NA),
    ("M-2", 0): (0, FROM_MAINTENANCE, 0),
    ("M-2", 5): (1, FROM_READING, pd.NA),
}


def test_a_record_labels_its_machines_readings_within_the_window_before_it() -> None:
    maintenance = pd.DataFrame(
        {
            "machine_id": ["M-1", "M-2"],
            "timestamp": pd.to_datetime(["2026-05-01 10:15", "2026-05-01 10:30"], utc=True),
            "outcome": ["twf", "no_fault"],
            "work_order_id": ["WO-1", "WO-2"],
        }
    )
    out = apply_maintenance_labels(READINGS, maintenance, label_window("1h"))
    got = {
        (r.machine_id, int((r.timestamp - T) / pd.Timedelta(minutes=1))): (
            r.machine_failure,
            r.label_source,
            r.twf,
        )
        for r in out.itertuples()
    }
    assert got == EXPECTED
    narrow = apply_maintenance_labels(READINGS, maintenance, label_window("20min"))
    assert narrow.loc[narrow["label_source"] == FROM_MAINTENANCE, "timestamp"].tolist() == [T]  # M-1 only


@pytest.mark.integration
def test_maintenance_labels_reach_training_set(pg_url: str, tmp_path: Path) -> None:
    store = ReadingsStore(url=pg_url)
    store.insert(READINGS)
    objects = LocalObjects(tmp_path / "objects")
    objects.put("incoming/maintenance/2026-05-01.csv", MAINTENANCE_CSV.encode())

    result = dg.materialize(
        [maintenance_records, training_set],
        resources={"readings_store": store, "object_store": LocalObjectStore(root=str(tmp_path / "objects"))},
        run_config={"ops": {"training_set": {"config": {"label_window": "1h"}}}},
    )

    assert result.success
    meta = {
        e.asset_key.path[-1]: e.materialization.metadata for e in result.get_asset_materialization_events()
    }
    assert (
        meta["maintenance_records"]["records_stored"].value,
        meta["maintenance_records"]["records_refused"].value,
    ) == (2, 1)
    built = result.output_for_node("training_set")
    got = {
        (m, int((t - T) / pd.Timedelta(minutes=1))): (int(f), int(twf) if pd.notna(twf) else pd.NA)
        for m, t, f, twf in zip(
            built["machine_id"], built["timestamp"], built["machine_failure"], built["twf"], strict=True
        )
    }
    assert got == {key: (label, twf) for key, (label, _, twf) in EXPECTED.items()}
    assert meta["training_set"]["labelled_by_maintenance"].value == 3
    assert meta["training_set"]["maintenance_records"].value == 2
    # unknown future, left out: M-1 an hour after its last record, M-3 without a record
    assert meta["training_set"]["censored_readings"].value == 2
    by_source = {r.data["source"]: r.data for r in meta["training_set"]["label_coverage_by_source"].records}
    assert (by_source["reading"]["rows"], by_source["maintenance"]["rows"]) == (2, 3)
    assert (by_source["reading"]["failures"], by_source["maintenance"]["failures"]) == (1, 2)
    by_machine = {
        r.data["machine_id"]: r.data for r in meta["training_set"]["label_coverage_by_machine"].records
    }
    assert by_machine["M-1"]["labelled_maintenance"] == 2 and by_machine["M-1"]["labelled_reading"] == 1
    assert by_machine["M-3"]["coverage"] == 0  # a machine without labels still shows
    assert count_labelled(store.engine, label_window("1h")) == len(built) == 5
    assert count_labelled(store.engine, label_window("20min")) == 3
