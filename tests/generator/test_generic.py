"""The generic fleet generator: any profile's readings, deterministic, inside the physical ranges, failing at
a realistic rate with a maintenance record per failure and labels within the horizon before it, learnable,
written as CSV in the profile's source names; `mfd generate` dispatches on the profile's generator."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from mfd.generator.generic import (
    FAILURE,
    GenericFleet,
    default_interval_s,
    failure_outcomes,
    generate_generic,
    readings_csv,
)
from mfd.generator.maintenance import MAINTENANCE_PREFIX
from mfd.generator.runs import Plan, execute
from mfd.profiles import Profile, load
from mfd.schema import MAINTENANCE_COLUMNS
from mfd.services import S3Server
from mfd.settings import load_settings
from mfd.storage.objects import LocalObjects, S3Objects

START = datetime(2026, 3, 1, tzinfo=UTC)
PUMP = (Path(__file__).parents[1] / "data" / "profiles" / "pump-station.yaml").read_text()
# No attribute, no label column, named failure modes, a short horizon.
COMPRESSOR = """\
name: compressor
machine: {column: unit}
timestamp: {column: time}
sensors:
  discharge_temperature_c: {unit: degC, min: 20, max: 180}
  oil_pressure_bar: {unit: bar, min: 0, max: 10}
  flow_ratio: {unit: "-", min: 0, max: 0.05}
failures: {records: maintenance, modes: [valve, seal, bearing]}
horizon: 45min
generator: generic
"""
PUMP_HEADER = (
    "asset_id,ts,pump_model,vibration_mm_s,pressure_bar,motor_current_a,bearing_temperature_c,failed"
)


def _profile(tmp_path_factory: pytest.TempPathFactory, text: str) -> Profile:
    path = tmp_path_factory.mktemp("profiles") / "plant.yaml"
    path.write_text(text)
    return load(str(path))


@pytest.fixture(scope="module")
def pump(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    return _profile(tmp_path_factory, PUMP)


@pytest.fixture(scope="module")
def compressor(tmp_path_factory: pytest.TempPathFactory) -> Profile:
    return _profile(tmp_path_factory, COMPRESSOR)


@pytest.fixture(scope="module")
def pump_run(pump: Profile):
    """40 pumps x 1,000 readings (4 min apart: the 2 h horizon holds 30)."""
    return generate_generic(pump, machines=40, rows=40_000, seed=7, start=START)


def test_same_seed_same_frames_and_another_seed_others(pump: Profile) -> None:
    first = generate_generic(pump, machines=8, rows=6_000, seed=3, start=START)
    again = generate_generic(pump, machines=8, rows=6_000, seed=3, start=START)
    other = generate_generic(pump, machines=8, rows=6_000, seed=4, start=START)
    pd.testing.assert_frame_equal(first.readings, again.readings)
    pd.testing.assert_frame_equal(first.records, again.records)
    assert not np.array_equal(first.readings["pressure_bar"], other.readings["pressure_bar"])
    # blocks of any size: the fleet's stream is the same rows as the one-shot frame
    fleet = GenericFleet(pump, 8, 3, START, default_interval_s(pump))
    streamed = pd.concat(fleet.readings(6_000))
    pd.testing.assert_frame_equal(streamed, first.readings)
    pd.testing.assert_frame_equal(fleet.records(), first.records)


def test_columns_are_canonical_and_values_inside_the_ranges(pump: Profile, pump_run) -> None:
    readings = pump_run.readings
    assert list(readings.columns) == [
        "machine_id",
        "timestamp",
        "machine_type",
        *pump.sensor_columns,
        "machine_failure",
    ]
    assert len(readings) == 40_000 and readings["machine_id"].nunique() == 40
    assert str(readings["timestamp"].dt.tz) == "UTC"
    assert set(readings["machine_type"]) == {"A", "B"}
    assert readings.groupby("machine_id")["machine_type"].nunique().eq(1).all()
    assert not readings.duplicated(["machine_id", "timestamp"]).any()
    for sensor in pump.sensors:
        values = readings[sensor.name]
        assert values.notna().all() and values.between(sensor.min, sensor.max).all(), sensor.name
        # healthy baselines sit well inside the range; only drift nears a limit
        healthy = values[readings["machine_failure"] == 0]
        span = sensor.max - sensor.min
        assert sensor.min + 0.2 * span < healthy.median() < sensor.min + 0.7 * span, sensor.name
    steps = readings.groupby("machine_id")["timestamp"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(minutes=4)]


def test_every_failure_has_a_record_and_labels_lie_within_the_horizon_before_it(
    pump: Profile, pump_run
) -> None:
    readings, records = pump_run.readings, pump_run.records
    assert list(records.columns) == list(MAINTENANCE_COLUMNS)
    assert len(records) >= 20 and records["work_order_id"].is_unique
    assert set(records["outcome"]) == {FAILURE} and records["timestamp"].is_monotonic_increasing
    assert 0.01 < readings["machine_failure"].mean() < 0.08
    # each record is at a reading of its machine: the failure reading, labelled
    at = records.merge(readings, on=["machine_id", "timestamp"], how="left", validate="one_to_one")
    assert at["machine_failure"].eq(1).all()
    # a reading is labelled exactly when a record of its machine follows within the horizon, or when the
    # machine's run ends inside the horizon before a failure the run did not reach
    nxt = pd.merge_asof(
        readings.sort_values("timestamp"),
        records.assign(failed_at=records["timestamp"])[["machine_id", "timestamp", "failed_at"]],
        on="timestamp",
        by="machine_id",
        direction="forward",
    )
    within = (nxt["failed_at"] - nxt["timestamp"]) <= pump.horizon
    last = nxt.groupby("machine_id")["timestamp"].transform("max")
    tail = nxt["failed_at"].isna() & (last - nxt["timestamp"] <= pump.horizon)
    labelled = nxt["machine_failure"] == 1
    assert (labelled == within).where(~tail, True).all()
    assert labelled[within].all()
    # after a failure the machine restarts healthy: its next reading carries no label
    after = pd.merge_asof(
        records.sort_values("timestamp"),
        readings.sort_values("timestamp").rename(columns={"timestamp": "next_at"}),
        left_on="timestamp",
        right_on="next_at",
        by="machine_id",
        direction="forward",
        allow_exact_matches=False,
    ).dropna(subset=["next_at"])
    assert len(after) and after["machine_failure"].eq(0).all()


def test_drift_is_learnable_on_held_out_machines(pump: Profile, pump_run) -> None:
    readings = pump_run.readings
    machines = sorted(readings["machine_id"].unique())
    test = readings["machine_id"].isin(machines[30:])
    x, y = readings[list(pump.sensor_columns)], readings["machine_failure"]
    model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x[~test], y[~test])
    auc = roc_auc_score(y[test], model.predict_proba(x[test])[:, 1])
    assert auc > 0.8, auc


def test_profile_without_attribute_or_label_column_has_modes_as_outcomes(compressor: Profile) -> None:
    run = generate_generic(compressor, machines=20, rows=20_000, seed=1, start=START)
    assert list(run.readings.columns) == ["machine_id", "timestamp", *compressor.sensor_columns]
    assert failure_outcomes(compressor) == ("valve", "seal", "bearing")
    assert set(run.records["outcome"]) == {"valve", "seal", "bearing"}
    flow = run.readings["flow_ratio"]
    assert flow.between(0, 0.05).all() and flow.nunique() > 100  # a tiny range keeps its resolution
    assert default_interval_s(compressor) == 90.0


def test_shipped_cmapss_profile_generates_inside_its_ranges() -> None:
    cmapss = load("cmapss")
    run = generate_generic(cmapss, machines=10, rows=5_000, seed=0, start=START)
    assert "machine_failure" not in run.readings and len(run.records) > 0
    assert set(run.readings["machine_type"]) <= set(cmapss.segments)
    for sensor in cmapss.sensors:
        assert run.readings[sensor.name].between(sensor.min, sensor.max).all(), sensor.name
    assert run.readings.groupby("machine_id")["timestamp"].diff().dropna().eq(pd.Timedelta(hours=1)).all()


def test_duration_sizes_the_run(pump: Profile) -> None:
    run = generate_generic(pump, machines=5, seed=0, start=START, interval_s=60, duration=timedelta(hours=2))
    assert len(run.readings) == 5 * 120


def test_csv_uses_the_profile_source_names_and_reads_back(pump: Profile, pump_run) -> None:
    rows = pump_run.readings.iloc[:500]
    data = readings_csv(rows, pump)
    assert data.decode().splitlines()[0] == PUMP_HEADER
    assert (
        ",2026-03-01 00:" in data.decode().splitlines()[1] and data.decode().splitlines()[1].count("Z,") == 1
    )
    back = pd.read_csv(io.BytesIO(data))
    assert (pd.to_datetime(back["ts"], utc=True).to_numpy() == rows["timestamp"].to_numpy()).all()
    for sensor in pump.sensor_columns:
        assert (back[sensor].to_numpy() == rows[sensor].to_numpy()).all()
    assert (back["failed"].to_numpy() == rows["machine_failure"].to_numpy()).all()


def test_a_run_with_a_generic_profile_writes_source_named_files_and_its_records(
    pump: Profile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    for name in ("MFD_DATABASE_URL", "MFD_S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    plan = Plan(
        machines=6,
        rows=3_000,
        seed=2,
        start=START,
        interval_s=default_interval_s(pump),
        rate=None,
        sinks=frozenset({"files"}),
        file_rows=1_000,
        peripheral=False,
        bad_rate=0.0,
        database_url=None,
        quiet=True,
        maintenance=True,
        maintenance_delay=timedelta(0),
        maintenance_missing=0.0,
        profile=pump,
    )
    outcome, _ = execute(plan, load_settings())
    expected = generate_generic(pump, machines=6, rows=3_000, seed=2, start=START)
    objects = LocalObjects(tmp_path / "objects")
    keys = sorted(o.key for o in objects.list("incoming/") if o.key.startswith("incoming/readings-"))
    assert outcome.files == len(keys) == 3
    assert all(objects.get(k).decode().splitlines()[0] == PUMP_HEADER for k in keys)
    files = pd.concat(pd.read_csv(io.BytesIO(objects.get(k))) for k in keys)
    assert (files["pressure_bar"].to_numpy() == expected.readings["pressure_bar"].to_numpy()).all()
    (record_file,) = [o.key for o in objects.list(MAINTENANCE_PREFIX)]
    filed = pd.read_csv(io.BytesIO(objects.get(record_file)))
    assert outcome.maintenance_records == len(filed) == len(expected.records) > 0
    assert (pd.to_datetime(filed["timestamp"]) == expected.records["timestamp"].dt.floor("s")).all()


def test_mfd_generate_under_cmapss_writes_files_and_the_readings_table(tmp_path: Path) -> None:
    """A fresh process with MFD_PROFILE=cmapss (the profile is per process): files in the profile's
    source names, rows in canonical names in the table, records of the failures."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    env |= {"MFD_PROFILE": "cmapss", "MFD_HOME": str(tmp_path)}
    cli = Path(sys.executable).with_name("mfd")
    for sinks in (["--sink", "files"], ["--sink", "db", "--maintenance"]):
        done = subprocess.run(
            [str(cli), "generate", "--rows", "5000", *sinks, "--quiet"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("generated 5,000 readings from 10 machines"), done.stdout
    objects = LocalObjects(tmp_path / "objects")
    (key,) = [o.key for o in objects.list("incoming/") if o.key.startswith("incoming/readings-")]
    header = objects.get(key).decode().splitlines()[0].split(",")
    assert header[:3] == ["engine", "timestamp", "subset"] and "machine_failure" not in header
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'readings.db'}")
    with engine.connect() as conn:
        stored = pd.read_sql("SELECT * FROM readings", conn)
    engine.dispose()
    assert len(stored) == 5000 and stored["machine_id"].str.startswith("M-").all()
    assert stored["setting_1"].between(-1, 50).all() and stored["machine_failure"].isna().all()
    assert len(objects.list(MAINTENANCE_PREFIX)) == 1


def test_mfd_generate_under_a_written_profile_into_postgres_and_s3(
    tmp_path: Path, pump: Profile, pg_url: str, s3: S3Server, bucket: str
) -> None:
    """MFD_PROFILE=<the pump file>: the readings table of a real PostgreSQL gets the rows (COPY through the
    bulk writer) in canonical names with their labels; S3 gets source-named files with defects; the
    records file lists every failure."""
    profile_path = tmp_path / "pump.yaml"
    profile_path.write_text(PUMP)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    env |= {
        "MFD_PROFILE": str(profile_path),
        "MFD_HOME": str(tmp_path / "home"),
        "MFD_DATABASE_URL": pg_url,
        "MFD_S3_BUCKET": bucket,
        "MFD_S3_ENDPOINT_URL": s3.endpoint_url,
        "MFD_S3_ACCESS_KEY_ID": s3.access_key,
        "MFD_S3_SECRET_ACCESS_KEY": s3.secret_key,
    }
    argv = ["generate", "--machines", "6", "--rows", "3000", "--seed", "5", "--start", "2026-03-01"]
    argv += ["--sink", "db", "--sink", "files", "--bad-rate", "0.05", "--quiet"]
    argv += ["--maintenance", "--maintenance-delay", "0", "--maintenance-missing-share", "0"]
    cli = Path(sys.executable).with_name("mfd")
    done = subprocess.run([str(cli), *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "3,000 new rows" in done.stdout, done.stdout
    expected = generate_generic(pump, machines=6, rows=3_000, seed=5, start=START)
    engine = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        stored = pd.read_sql("SELECT * FROM readings ORDER BY id", conn)
    engine.dispose()
    assert {"machine_id", "timestamp", "machine_type", "machine_failure"} <= set(stored.columns)
    assert (stored["pressure_bar"].to_numpy() == expected.readings["pressure_bar"].to_numpy()).all()
    assert (stored["machine_failure"].to_numpy() == expected.readings["machine_failure"].to_numpy()).all()
    assert stored["machine_type"].isin(["A", "B"]).all()
    objects = S3Objects(s3.client(), bucket)
    keys = [o.key for o in objects.list("incoming/") if o.key.startswith("incoming/readings-")]
    heads = {objects.get(k).decode().split("\n", 1)[0] for k in keys if objects.get(k)}
    assert PUMP_HEADER in heads and not any("machine_id" in h for h in heads)
    (records_key,) = [o.key for o in objects.list(MAINTENANCE_PREFIX)]
    filed = pd.read_csv(io.BytesIO(objects.get(records_key)))
    assert len(filed) == len(expected.records) > 0
