"""A corrected file: rows whose key is stored with other values are conflicts, not duplicates, on PostgreSQL
and SQLite and on both object stores; `reject` sets them aside side by side, `replace` keeps the old values."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from shared_bucket import prefixed_objects
from sqlalchemy.engine import Engine

from mfd.generator import generate_peripheral, generate_readings, to_csv_bytes
from mfd.ingestion import load as ingest
from mfd.storage import readings as store
from mfd.storage.conflicts import Conflicts
from mfd.storage.objects import Objects
from mfd.storage.tables import peripheral_readings, reading_revisions, readings

KEY = "incoming/batch.csv"


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Objects:
    return prefixed_objects(request, tmp_path)


@pytest.fixture
def engine(readings_url: str) -> Engine:
    engine = store.create_engine(readings_url)
    store.ensure_tables(engine)
    return engine


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_readings(machines=5, rows=600, seed=11)


def _stored(engine: Engine, table: sa.Table = readings) -> pd.DataFrame:
    frame = store.read_frame(engine, sa.select(table).order_by(table.c.id))
    return frame.set_index(["machine_id", "timestamp"])


def _corrected(clean: pd.DataFrame, rows: slice) -> pd.DataFrame:
    fixed = clean.copy()
    fixed.loc[fixed.index[rows], "torque_nm"] += 1.5
    return fixed


def _adds_up(report: ingest.IngestReport) -> bool:
    return report.read == report.loaded + report.duplicate + report.conflicting + report.rejected


def test_corrected_file_is_rejected_side_by_side_and_nothing_stored_changes(
    objects: Objects, engine: Engine, clean: pd.DataFrame
) -> None:
    objects.put(KEY, to_csv_bytes(clean.iloc[:500]))
    first = ingest.ingest_object(objects, engine, KEY)
    before = _stored(engine)
    fixed = _corrected(clean, slice(100, 120))
    objects.put(KEY, to_csv_bytes(fixed))  # same name: 20 rows changed, 100 new
    # Small chunks: the first ones meet stored keys (merge path), the later ones are new.
    again = ingest.ingest_object(objects, engine, KEY, chunk_bytes=8 << 10)
    assert (again.read, again.loaded, again.duplicate, again.conflicting, again.rejected) == (
        600,
        100,
        480,
        20,
        0,
    )
    assert _adds_up(again) and again.status == "processed"
    after = _stored(engine)
    pd.testing.assert_frame_equal(after.loc[before.index], before)  # nothing stored changed
    assert len(after) == 600
    side = pd.read_csv(io.BytesIO(objects.get(again.conflicts_key)))
    assert again.conflicts_key == f"{again.filed_as.replace('processed/', 'rejected/', 1)}.conflicts.csv"
    assert len(side) == 20 and set(side["differs"]) == {"torque_nm"}
    assert side["torque_nm_incoming"].round(6).tolist() == fixed["torque_nm"].iloc[100:120].round(6).tolist()
    assert side["torque_nm_stored"].round(6).tolist() == clean["torque_nm"].iloc[100:120].round(6).tolist()
    assert (side["tool_wear_min_stored"] == side["tool_wear_min_incoming"]).all()
    assert set(side["stored_source"]) == {KEY}
    # Both versions are archived, neither overwritten.
    assert first.filed_as != again.filed_as
    assert objects.get(first.filed_as) == to_csv_bytes(clean.iloc[:500])
    assert objects.get(again.filed_as) == to_csv_bytes(fixed)


def test_replace_updates_the_stored_row_and_keeps_its_old_values(
    objects: Objects, engine: Engine, clean: pd.DataFrame
) -> None:
    objects.put(KEY, to_csv_bytes(clean))
    ingest.ingest_object(objects, engine, KEY)
    before = _stored(engine)
    fixed = _corrected(clean, slice(10, 25))
    objects.put(KEY, to_csv_bytes(fixed))
    again = ingest.ingest_object(objects, engine, KEY, chunk_bytes=8 << 10, conflict_policy="replace")
    assert (again.loaded, again.duplicate, again.conflicting, again.rejected) == (0, 585, 15, 0)
    assert again.conflicts_key is None and again.status == "processed"
    after = _stored(engine)
    assert after["id"].tolist() == before["id"].tolist()  # updated in place, same ids
    changed = after["torque_nm"].ne(before["torque_nm"])
    assert changed.sum() == 15
    assert after["torque_nm"].round(6).tolist() == fixed["torque_nm"].round(6).tolist()
    with engine.connect() as conn:
        revisions = pd.read_sql(sa.select(reading_revisions).order_by(reading_revisions.c.reading_id), conn)
    assert len(revisions) == 15 and set(revisions["table_name"]) == {"readings"}
    assert revisions["reading_id"].tolist() == before["id"][changed.to_numpy()].tolist()
    old = [json.loads(v)["torque_nm"] for v in revisions["old_values"]]
    assert pd.Series(old).round(6).tolist() == clean["torque_nm"].iloc[10:25].round(6).tolist()
    assert set(revisions["revised_by"]) == {KEY} and set(revisions["old_source"]) == {KEY}
    assert revisions["revised_at"].notna().all()


def test_a_key_repeated_in_one_file_with_other_values_is_a_conflict(objects: Objects, engine: Engine) -> None:
    header = "machine_id,timestamp,machine_type,air_temperature_k,process_temperature_k,"
    header += "rotational_speed_rpm,torque_nm,tool_wear_min"
    rows = [
        "M-1,2026-03-01T10:00:00Z,L,300.1,310.2,1500,40.0,10",
        "M-1,2026-03-01T10:00:00Z,L,300.1,310.2,1500,41.0,10",  # same key, other torque
        "M-1,2026-03-01T10:00:00Z,L,300.1,310.2,1500,40.0,10",  # exact repeat of the first
        "M-1,2026-03-01T10:00:01Z,L,300.1,310.2,1500,40.0,10",
    ]
    objects.put(KEY, "\n".join([header, *rows]).encode())
    report = ingest.ingest_object(objects, engine, KEY)
    assert (report.loaded, report.duplicate, report.conflicting) == (2, 1, 1)
    assert _stored(engine)["torque_nm"].tolist() == [40.0, 40.0]  # the first stays
    objects.put(KEY, "\n".join([header, rows[1]]).encode())
    replaced = ingest.ingest_object(objects, engine, KEY, conflict_policy="replace")
    assert (replaced.loaded, replaced.conflicting) == (0, 1)
    assert _stored(engine)["torque_nm"].tolist() == [41.0, 40.0]


def test_a_file_of_only_conflicts_is_processed_not_rejected(
    objects: Objects, engine: Engine, clean: pd.DataFrame
) -> None:
    objects.put(KEY, to_csv_bytes(clean.iloc[:50]))
    ingest.ingest_object(objects, engine, KEY)
    objects.put(KEY, to_csv_bytes(_corrected(clean.iloc[:50], slice(0, 50))))
    report = ingest.ingest_object(objects, engine, KEY)
    assert (report.status, report.loaded, report.conflicting) == ("processed", 0, 50)


def test_peripheral_files_share_the_conflict_path(
    objects: Objects, engine: Engine, clean: pd.DataFrame
) -> None:
    key = "incoming/peripheral/devices.csv"
    devices = generate_peripheral(clean.iloc[:200], seed=3)
    objects.put(key, to_csv_bytes(devices))
    ingest.ingest_object(objects, engine, key)
    fixed = devices.copy()
    fixed.loc[fixed.index[:7], "vibration_mm_s"] += 0.25
    objects.put(key, to_csv_bytes(fixed))
    report = ingest.ingest_object(objects, engine, key)
    assert (report.loaded, report.duplicate, report.conflicting) == (0, len(devices) - 7, 7)
    side = pd.read_csv(io.BytesIO(objects.get(report.conflicts_key)))
    assert set(side["differs"]) == {"vibration_mm_s"}
    stored = _stored(engine, peripheral_readings)["vibration_mm_s"]
    assert stored.round(6).tolist() == devices["vibration_mm_s"].round(6).tolist()


def test_a_clean_load_never_looks_for_conflicts(
    objects: Objects, engine: Engine, clean: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path stays fast: conflicts are looked for only when a write inserted fewer rows than given."""
    settled = []
    real = Conflicts.settle
    monkeypatch.setattr(
        Conflicts, "settle", lambda self, staging: settled.append(staging) or real(self, staging)
    )
    objects.put(KEY, to_csv_bytes(clean))
    assert ingest.ingest_object(objects, engine, KEY, chunk_bytes=8 << 10).loaded == len(clean)
    assert settled == []
    objects.put("incoming/again.csv", to_csv_bytes(clean.iloc[:10]))
    assert ingest.ingest_object(objects, engine, "incoming/again.csv").duplicate == 10
    assert len(settled) == 1
