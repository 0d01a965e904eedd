"""Moves that never lose a new version, versioned archive names, symbolic links refused by the local store,
and keys longer than the old varchar(512) `source`: on SeaweedFS and the local twin, PostgreSQL and SQLite."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from shared_bucket import prefixed_objects

from mfd.generator import generate_readings, to_csv_bytes
from mfd.ingestion import load as ingest
from mfd.storage import objects as objects_module
from mfd.storage import readings as store
from mfd.storage.objects import (
    MAX_KEY_BYTES,
    LocalObjects,
    ObjectChanged,
    ObjectRefused,
    Objects,
    archive_key,
)
from mfd.storage.tables import readings


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Objects:
    return prefixed_objects(request, tmp_path)


def _etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def test_open_version_gives_the_etag_of_what_it_reads(objects: Objects) -> None:
    objects.put("incoming/a.csv", b"one\n")
    stream, etag = objects.open_version("incoming/a.csv")
    assert stream.read() == b"one\n" and etag == objects.list("incoming/")[0].etag
    if not isinstance(objects, LocalObjects):  # S3's ETag is the MD5 of a single-part upload
        assert etag == _etag(b"one\n")


def test_move_of_a_stale_version_files_nothing_and_deletes_nothing(objects: Objects) -> None:
    objects.put("incoming/a.csv", b"one\n")
    _, loaded = objects.open_version("incoming/a.csv")
    objects.put("incoming/a.csv", b"two\n")  # a corrected upload lands after the read
    with pytest.raises(ObjectChanged, match="changed after it was read"):
        objects.move("incoming/a.csv", "processed/a.csv", etag=loaded)
    assert objects.get("incoming/a.csv") == b"two\n" and not objects.list("processed/")


def test_a_version_uploaded_between_copy_and_delete_is_not_deleted(
    objects: Objects, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upload happens at the real point between the copy and the delete (`move_copied`)."""
    objects.put("incoming/a.csv", b"one\n")
    _, loaded = objects.open_version("incoming/a.csv")

    def upload_meanwhile(name: str) -> None:
        if name == "move_copied":
            objects.put("incoming/a.csv", b"two\n")

    monkeypatch.setattr(objects_module, "pause_point", upload_meanwhile)
    objects.move("incoming/a.csv", "processed/a.csv", etag=loaded)
    assert objects.get("processed/a.csv") == b"one\n"  # what was loaded is archived
    assert objects.get("incoming/a.csv") == b"two\n"  # the new version waits for the next run


def test_move_of_the_version_read_removes_the_source(objects: Objects) -> None:
    objects.put("incoming/a.csv", b"one\n")
    _, loaded = objects.open_version("incoming/a.csv")
    objects.move("incoming/a.csv", "processed/a.csv", etag=loaded)
    assert not objects.exists("incoming/a.csv") and objects.get("processed/a.csv") == b"one\n"


def test_archive_names_carry_the_version_and_fit_any_store() -> None:
    assert archive_key("incoming/x/a.csv", "processed/", "abc") == "processed/x/a@abc.csv"
    assert archive_key("incoming/a", "rejected/", "abc") == "rejected/a@abc"
    assert archive_key("incoming/a.csv", "processed/", "v1") != archive_key(
        "incoming/a.csv", "processed/", "v2"
    )
    long_key = "incoming/" + "d" * 400 + "/" + "é" * 300 + ".csv"
    filed = archive_key(long_key, "rejected/", "0" * 32)
    assert filed.endswith("~@" + "0" * 32 + ".csv") and filed.startswith("rejected/" + "d" * 400 + "/")
    assert len(f"{filed}.conflicts.csv".encode()) <= MAX_KEY_BYTES
    assert len(f"{filed.rsplit('/', 1)[1]}.bad_rows.csv".encode()) <= 255 - 16


def test_local_store_never_follows_symbolic_links(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "objects")
    outside = tmp_path / "secret.csv"
    outside.write_bytes(b"machine_id\nM-1\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "b.csv").write_bytes(b"x\n")
    objects.put("incoming/real.csv", b"a\n")
    os.symlink(outside, tmp_path / "objects/incoming/link.csv")
    os.symlink(tmp_path / "elsewhere", tmp_path / "objects/incoming/dir")
    assert [o.key for o in objects.list("incoming/")] == ["incoming/real.csv"]
    with pytest.raises(ObjectRefused, match="symbolic link"):
        objects.open("incoming/link.csv")
    with pytest.raises(ObjectRefused, match="symbolic link"):
        objects.open_version("incoming/dir/b.csv")
    assert not objects.exists("incoming/link.csv") and not objects.exists("incoming/dir/b.csv")
    with pytest.raises(ObjectRefused, match="symbolic link"):
        objects.move("incoming/link.csv", "processed/link.csv")
    assert outside.exists() and (tmp_path / "objects/incoming/link.csv").is_symlink()


def test_a_key_longer_than_512_characters_loads(objects: Objects, readings_url: str, tmp_path: Path) -> None:
    # File systems and SeaweedFS's filer allow 255 bytes per path segment: a long key is a nested one.
    key = "incoming/" + "/".join(["k" * 200] * 4) + "/readings.csv"
    assert len(key) > 800
    engine = store.create_engine(readings_url)
    store.ensure_tables(engine)
    data = to_csv_bytes(generate_readings(2, 100, seed=5))
    objects.put(key, data)
    report = ingest.ingest_object(objects, engine, key)
    assert (report.status, report.loaded) == ("processed", 100)
    assert objects.get(report.filed_as) == data and len(report.filed_as.encode()) <= MAX_KEY_BYTES
    assert len(ingest.read_loaded(engine, key)) == 100


def test_an_old_varchar_source_column_is_widened(pg_url: str) -> None:
    engine = store.create_engine(pg_url)
    readings.create(engine)  # the table an earlier version made: the same columns, a narrower source
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE readings ALTER COLUMN source TYPE varchar(512)")
    store.ensure_tables(engine)
    with engine.connect() as conn:
        kind = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'readings' AND column_name = 'source'"
            )
        ).scalar_one()
    assert kind == "text"
