"""The generator's maintenance records: late, some missing, and, once ingested, labelling the failures
they report."""

from __future__ import annotations

from datetime import timedelta

import pandas as pd
import pytest

from mfd.generator.fleet import generate_readings
from mfd.generator.maintenance import maintenance_csv, maintenance_records
from mfd.ingestion.maintenance import read_records, refusal_reasons
from mfd.preparation.labels import FROM_MAINTENANCE, apply_maintenance_labels
from mfd.validation import TimestampWindow


@pytest.fixture(scope="module")
def readings() -> pd.DataFrame:
    return generate_readings(machines=20, rows=20_000, seed=5)


def test_records_are_late_some_missing_and_name_the_failure_mode(readings: pd.DataFrame) -> None:
    failures = readings[readings["machine_failure"] == 1]
    assert len(failures) > 50
    records = maintenance_records(readings, seed=1, max_delay=timedelta(minutes=30), missing=0.25)
    assert 0.6 * len(failures) < len(records) < 0.9 * len(failures)
    assert records.equals(
        maintenance_records(readings, seed=1, max_delay=timedelta(minutes=30), missing=0.25)
    )
    everything = maintenance_records(readings, seed=1, max_delay=timedelta(minutes=30), missing=0.0)
    assert len(everything) == len(failures) and everything["work_order_id"].is_unique
    # each record lies 0..30 min after a failure reading of its machine, whose mode it names
    pairs = pd.merge_asof(
        everything.sort_values("timestamp"),
        failures.assign(failed_at=failures["timestamp"]).sort_values("timestamp"),
        on="timestamp",
        by="machine_id",
        direction="backward",
    )
    lag = pairs["timestamp"] - pairs["failed_at"]
    assert lag.between(pd.Timedelta(0), pd.Timedelta(minutes=30)).all()
    on_time = maintenance_records(readings, seed=1, max_delay=timedelta(0), missing=0.0)
    exact = on_time.merge(failures, on=["machine_id", "timestamp"], validate="one_to_one")
    modes = exact[["twf", "hdf", "pwf", "osf", "rnf"]].astype(bool)
    first_mode = modes.idxmax(axis=1).where(modes.any(axis=1), "rnf")
    assert len(exact) == len(failures) and (exact["outcome"] == first_mode).all()
    assert exact["outcome"].nunique() > 1


def test_ingested_records_pass_the_rules_and_label_the_failures_they_report(readings: pd.DataFrame) -> None:
    records = maintenance_records(readings, seed=2, max_delay=timedelta(minutes=20), missing=0.5)
    parsed = read_records(maintenance_csv(records))
    window = TimestampWindow(ahead=timedelta(days=3650))
    reasons = refusal_reasons(parsed, set(readings["machine_id"]), set(), window)
    assert reasons.isna().all(), reasons.dropna().head()

    unlabelled = readings.assign(machine_failure=pd.NA).drop(columns=["twf", "hdf", "pwf", "osf", "rnf"])
    stored = records.assign(timestamp=pd.to_datetime(records["timestamp"], utc=True))
    labelled = apply_maintenance_labels(unlabelled, stored, pd.Timedelta(minutes=20))
    found = labelled[labelled["machine_failure"] == 1]
    assert (found["label_source"] == FROM_MAINTENANCE).all()
    truly_failed = readings.loc[found.index, "machine_failure"] == 1
    assert truly_failed.sum() >= len(records) - 1  # each filed record reaches the reading it reports
