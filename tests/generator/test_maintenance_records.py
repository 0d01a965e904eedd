"""The generator's maintenance records: late, some missing, and, once ingested, labelling the failures
they report."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from mfd.cli.main import main
from mfd.generator.fleet import generate_readings
from mfd.generator.maintenance import MAINTENANCE_PREFIX as GENERATOR_PREFIX
from mfd.generator.maintenance import maintenance_csv, maintenance_records
from mfd.ingestion.maintenance import MAINTENANCE_PREFIX as INGESTION_PREFIX
from mfd.ingestion.maintenance import ingest_maintenance, read_records, refusal_reasons
from mfd.preparation.labels import (
    FROM_MAINTENANCE,
    apply_maintenance_labels,
    read_labelled_readings,
    read_maintenance,
)
from mfd.settings import load_settings
from mfd.storage import readings as store
from mfd.storage.connect import objects_from_settings
from mfd.storage.tables import readings as readings_table
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


@pytest.mark.integration
def test_mfd_generate_files_maintenance_records_that_ingest_and_label_readings(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """`mfd generate --maintenance` into PostgreSQL: one CSV under incoming/maintenance/, which the
    maintenance ingestion stores whole and which labels the failure readings it reports once their own
    labels are gone."""
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MFD_S3_BUCKET", raising=False)
    args = ["generate", "--machines", "20", "--rows", "20000", "--seed", "5", "--quiet"]
    args += ["--database-url", pg_url, "--maintenance", "--maintenance-delay", "1200"]
    assert main([*args, "--maintenance-missing-share", "0.5"]) == 0
    out = capsys.readouterr().out
    objects = objects_from_settings(load_settings())
    [key] = [o.key for o in objects.list(INGESTION_PREFIX)]
    assert GENERATOR_PREFIX == INGESTION_PREFIX and key.startswith(f"{INGESTION_PREFIX}maintenance-")
    assert [o.key for o in objects.list("incoming/") if o.key != key] == []  # no readings files: --sink db

    engine = store.create_engine(pg_url)
    stored = pd.read_sql(sa.select(readings_table), engine)
    failures = int((stored["machine_failure"] == 1).sum())
    report = ingest_maintenance(engine, objects, key, TimestampWindow())
    assert report.refused == {} and 0.3 * failures < report.stored < 0.7 * failures
    assert f"{report.stored:,} maintenance records under incoming/maintenance/" in out

    with engine.begin() as conn:  # the readings came without labels: only the records can label them
        conn.execute(sa.update(readings_table).values(machine_failure=None))
    labelled = read_labelled_readings(engine, read_maintenance(engine), pd.Timedelta(minutes=20))
    labelled = apply_maintenance_labels(labelled, read_maintenance(engine), pd.Timedelta(minutes=20))
    assert (labelled["label_source"] == FROM_MAINTENANCE).all()
    found = stored.set_index("id").loc[labelled.loc[labelled["machine_failure"] == 1, "id"]]
    assert (found["machine_failure"] == 1).sum() >= report.stored - 1  # each record reaches its failure
