"""The `alarms` asset in a Dagster run after a prediction_batches materialization (its range and thresholds
taken from that run's metadata), on the SQLite twin; a re-run reads and takes nothing twice."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa

from mfd.alarms import read_scored, update_alarms
from mfd.console.sample import SampleFleet, sample_readings, write_scores
from mfd.storage.readings import insert_readings
from mfd.storage.tables import alarms as alarms_table
from mfd.storage.tables import readings
from mfd_assets.alarms import alarms
from mfd_resources import ReadingsStore

FLEET = SampleFleet(machines=10, readings_per_machine=6)


def scored_store(url: str) -> tuple[ReadingsStore, int, int]:
    store = ReadingsStore(url=url)
    insert_readings(store.engine, sample_readings(FLEET, datetime.now(UTC)), source="test")
    with store.engine.connect() as conn:
        stored = pd.read_sql(sa.select(readings).order_by(readings.c.id), conn)
    stored["timestamp"] = pd.to_datetime(stored["timestamp"], utc=True)
    write_scores(store.engine, stored, FLEET, datetime.now(UTC))
    return store, int(stored["id"].min()), int(stored["id"].max())


def test_alarms_take_the_runs_prediction_batch(tmp_path: Path) -> None:
    store, first, last = scored_store(f"sqlite:///{tmp_path / 'readings.db'}")

    @dg.asset(name="prediction_batches")
    def batch_stand_in() -> dg.MaterializeResult:  # the champion's batch is tested in tests/detection
        return dg.MaterializeResult(
            metadata={
                "first_id": first,
                "last_id": last,
                "thresholds_by_machine_type": dg.MetadataValue.json({"L": 0.5, "M": 0.5, "H": 0.5}),
            }
        )

    def run() -> dict:
        result = dg.materialize([batch_stand_in, alarms], resources={"readings_store": store})
        (materialization,) = result.asset_materializations_for_node("alarms")
        return {k: v.value for k, v in materialization.metadata.items()}

    first_run, second_run = run(), run()
    assert (first_run["first_id"], first_run["last_id"], first_run["readings"]) == (first, last, 60)
    assert first_run["opened"] > 0 and first_run["machines"] == 10
    # The re-run's read leaves out readings machine_risk took already: nothing to take, nothing changes.
    assert second_run["readings"] == 0 and second_run["opened"] == second_run["bumped"] == 0
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(alarms_table.c.machine_id, alarms_table.c.threshold)).all()
    assert len(stored) == first_run["opened"] and {t for _, t in stored} == {0.5}


def test_read_scored_reads_the_same_frame_from_sqlite_and_postgresql(tmp_path: Path, pg_url: str) -> None:
    """PostgreSQL reads the batch by one COPY, SQLite by a SELECT: the same rows, values and order, before
    and after part of the batch was taken into the alarms (machine_risk leaves those out)."""
    read = {}
    for name, url in (("sqlite", f"sqlite:///{tmp_path / 'readings.db'}"), ("postgresql", pg_url)):
        store, first, last = scored_store(url)
        whole = read_scored(store.engine, first, last)
        update_alarms(store.engine, whole.iloc[:25], thresholds={"L": 0.5, "M": 0.5, "H": 0.5})
        rest = read_scored(store.engine, first, last)
        # ids and times relative to the store's first (each store was written at its own now)
        t0 = whole["timestamp"].min()
        read[name] = [
            f.assign(reading_id=f["reading_id"] - first, timestamp=f["timestamp"] - t0) for f in (whole, rest)
        ]
    (whole, rest), (pg_whole, pg_rest) = read["sqlite"], read["postgresql"]
    assert len(whole) == 60 and 0 < len(rest) < len(whole)
    assert rest["reading_id"].isin(whole["reading_id"].iloc[25:]).all()
    for ours, theirs in ((whole, pg_whole), (rest, pg_rest)):
        pd.testing.assert_frame_equal(ours.astype({"rul_estimate": "float64"}), theirs, check_exact=True)


def test_alarms_read_nothing_back_when_prediction_batches_took_its_batch(tmp_path: Path) -> None:
    store, first, last = scored_store(f"sqlite:///{tmp_path / 'readings.db'}")

    @dg.asset(name="prediction_batches")
    def took_its_batch() -> dg.MaterializeResult:  # as prediction_batches says after update_alarms
        return dg.MaterializeResult(metadata={"first_id": first, "last_id": last, "alarm_crossings": 3})

    result = dg.materialize([took_its_batch, alarms], resources={"readings_store": store})
    (materialization,) = result.asset_materializations_for_node("alarms")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert meta["taken_by_prediction_batches"] is True and meta["readings"] == 0
    with store.engine.connect() as conn:  # this stand-in took nothing: the step did not either
        assert conn.execute(sa.select(sa.func.count()).select_from(alarms_table)).scalar() == 0
