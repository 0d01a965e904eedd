"""Maintenance records on real PostgreSQL and both object stores: good records stored, bad ones refused
with their reason beside the file, nothing else lost; the readings sensor leaves incoming/maintenance/ alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from mfd.cli.main import main
from mfd.ingestion.incoming import IncomingCursor, look
from mfd.ingestion.maintenance import MAINTENANCE_PREFIX, ingest_maintenance, pending_files
from mfd.storage import readings as store
from mfd.storage.objects import PROCESSED, REJECTED, LocalObjects
from mfd.storage.tables import maintenance_records
from mfd.validation import TimestampWindow

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WINDOW = TimestampWindow(ahead=timedelta(hours=1), now=NOW)


def _reading(machine: str, at: str) -> dict:
    return {
        "machine_id": machine,
        "timestamp": pd.Timestamp(at, tz="UTC"),
        "machine_type": "L",
        "air_temperature_k": 300.0,
        "process_temperature_k": 310.0,
        "rotational_speed_rpm": 1500.0,
        "torque_nm": 40.0,
        "tool_wear_min": 10.0,
    }


@pytest.fixture
def engine(pg_url: str):
    engine = store.create_engine(pg_url)
    store.ensure_tables(engine)
    store.insert_readings(
        engine, pd.DataFrame([_reading("M-1", "2026-05-01"), _reading("M-2", "2026-05-01")])
    )
    return engine


def stored(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(maintenance_records).order_by(maintenance_records.c.work_order_id), conn)


CSV = (
    "machine_id,timestamp,outcome,work_order_id\n"
    "M-1,2026-05-02T10:00:00Z,twf,WO-1\n"  # line 2: good
    "M-2,2026-05-03 08:00,no_fault,WO-2\n"  # line 3: good (no offset: UTC)
    "M-9,2026-05-03T08:00:00Z,hdf,WO-3\n"  # line 4: unknown machine
    "M-1,2026-07-01T00:00:00Z,osf,WO-4\n"  # line 5: in the future
    "M-2,2026-05-04T00:00:00Z,pwf,WO-1\n"  # line 6: repeats WO-1
    "M-1,2026-05-04T00:00:00Z,broken,WO-5\n"  # line 7: unknown outcome
    ",2026-05-04T00:00:00Z,twf,WO-6\n"  # line 8: no machine
    "M-1,yesterday,twf,WO-7\n"  # line 9: not a time
)


def test_good_records_are_stored_and_each_bad_one_refused_with_its_reason(engine, objects) -> None:
    key = f"{MAINTENANCE_PREFIX}shift-1.csv"
    objects.put(key, CSV.encode())
    assert pending_files(objects) == [key]

    report = ingest_maintenance(engine, objects, key, WINDOW)

    assert (report.status, report.rows_read, report.stored, report.rows_refused) == ("processed", 8, 2, 6)
    rows = stored(engine)
    assert rows["work_order_id"].tolist() == ["WO-1", "WO-2"]
    assert rows["outcome"].tolist() == ["twf", "no_fault"]
    assert pd.to_datetime(rows["timestamp"], utc=True).tolist() == [
        pd.Timestamp("2026-05-02 10:00", tz="UTC"),
        pd.Timestamp("2026-05-03 08:00", tz="UTC"),
    ]
    assert rows["source"].unique().tolist() == [key]

    assert report.filed_as.startswith(f"{PROCESSED}maintenance/shift-1@") and objects.exists(report.filed_as)
    assert not objects.exists(key) and pending_files(objects) == []
    assert report.bad_rows_key.startswith(f"{REJECTED}maintenance/shift-1@")
    bad = pd.read_csv(pd.io.common.BytesIO(objects.get(report.bad_rows_key)), dtype=str)
    reasons = dict(zip(bad["line"].astype(int), bad["reason"], strict=True))
    assert reasons[4] == "unknown machine: no stored readings"
    assert reasons[5].startswith("timestamp outside [2000-01-01 00:00:00Z, 2026-06-01 13:00:00Z]")
    assert reasons[6] == "work_order_id repeats line 2"
    assert reasons[7] == "outcome not twf/hdf/pwf/osf/rnf/no_fault"
    assert reasons[8] == "machine_id missing"
    assert reasons[9] == "timestamp is not a time"
    assert set(bad["work_order_id"].fillna("")) == {"WO-3", "WO-4", "WO-1", "WO-5", "WO-6", "WO-7"}


def test_a_work_order_stored_before_is_refused_and_the_rest_of_the_file_kept(engine, objects) -> None:
    objects.put(f"{MAINTENANCE_PREFIX}a.csv", CSV.encode())
    ingest_maintenance(engine, objects, f"{MAINTENANCE_PREFIX}a.csv", WINDOW)
    again = "machine_id,timestamp,outcome,work_order_id\nM-1,2026-05-05T00:00:00Z,hdf,WO-2\nM-2,2026-05-05T00:00:00Z,rnf,WO-8\n"
    objects.put(f"{MAINTENANCE_PREFIX}b.csv", again.encode())

    report = ingest_maintenance(engine, objects, f"{MAINTENANCE_PREFIX}b.csv", WINDOW)

    assert (report.stored, report.refused) == (1, {"work_order_id stored before": 1})
    rows = stored(engine)
    assert rows["work_order_id"].tolist() == ["WO-1", "WO-2", "WO-8"]
    assert rows.set_index("work_order_id").loc["WO-2", "outcome"] == "no_fault"  # the first one stays


def test_a_file_without_the_columns_is_rejected_whole_with_the_reason(engine, objects) -> None:
    key = f"{MAINTENANCE_PREFIX}wrong.csv"
    objects.put(key, b"machine,when\nM-1,2026-05-01\n")

    report = ingest_maintenance(engine, objects, key, WINDOW)

    assert report.status == "rejected" and report.stored == 0
    assert report.filed_as.startswith(f"{REJECTED}maintenance/wrong@") and objects.exists(report.filed_as)
    assert (
        "missing column(s) machine_id, timestamp, outcome, work_order_id"
        in objects.get(f"{report.filed_as}.reason.json").decode()
    )
    assert stored(engine).empty


def test_the_readings_sensor_does_not_hand_out_maintenance_files(objects) -> None:
    objects.put(f"{MAINTENANCE_PREFIX}a.csv", CSV.encode())
    objects.put("incoming/readings.csv", b"machine_id\n")
    tick = look(objects, IncomingCursor(), datetime.now(UTC) + objects.settle)
    assert [o.key for o in tick.new] == ["incoming/readings.csv"]


def test_mfd_ingest_leaves_maintenance_files_alone(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    objects = LocalObjects(tmp_path / "objects")
    objects.put(f"{MAINTENANCE_PREFIX}a.csv", CSV.encode())
    assert main(["ingest"]) == 0
    assert "nothing under incoming/" in capsys.readouterr().out
    assert pending_files(objects) == [f"{MAINTENANCE_PREFIX}a.csv"]
