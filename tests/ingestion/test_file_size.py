"""A configured maximum file size (MFD_MAX_FILE_BYTES, issue 24): a larger incoming file is rejected with the
limit and its size in the reason, filed whole under rejected/ with the reason beside it, and not read."""

from __future__ import annotations

import json
from typing import IO, Any

import pytest
import sqlalchemy as sa

from mfd.generator import generate_readings, to_csv_bytes
from mfd.ingestion import load as ingest
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, Objects, S3Objects


def _engine(url: str) -> sa.Engine:
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    return engine


def _reason(objects: Objects, report: ingest.IngestReport) -> dict[str, Any]:
    return json.loads(objects.get(f"{report.filed_as}.reason.json"))


def test_a_file_over_the_limit_is_rejected_unread_with_the_limit_and_its_size(
    objects: LocalObjects | S3Objects, readings_url: str
) -> None:
    data = to_csv_bytes(generate_readings(machines=3, rows=300, seed=5))
    objects.put("incoming/big.csv", data)
    engine = _engine(readings_url)
    report = ingest.ingest_object(objects, engine, "incoming/big.csv", max_bytes=len(data) - 1)
    assert report.status == "rejected" and report.reason["rule"] == ingest.TOO_LARGE
    assert f"{len(data):,} bytes" in report.reason["message"]
    assert f"maximum of {len(data) - 1:,} bytes" in report.reason["message"]
    assert (report.read, report.loaded, report.rejected) == (0, 0, 0)  # not a line of it read
    assert report.filed_as.startswith("rejected/big@") and not objects.exists("incoming/big.csv")
    assert objects.get(report.filed_as) == data  # the whole file, where a person finds rejected files
    assert _reason(objects, report)["rule"] == ingest.TOO_LARGE
    assert store.count_readings(engine) == 0


def test_a_file_at_the_limit_loads(objects: LocalObjects | S3Objects, readings_url: str) -> None:
    data = to_csv_bytes(generate_readings(machines=3, rows=300, seed=6))
    objects.put("incoming/fits.csv", data)
    engine = _engine(readings_url)
    report = ingest.ingest_object(objects, engine, "incoming/fits.csv", max_bytes=len(data))
    assert report.status == "processed" and report.loaded == 300
    assert store.count_readings(engine) == 300


class _Undeclared:
    """A store's stream that declares no size (no `fh`, no Content-Length): counts the bytes given."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream, self.given = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.given += len(data)
        return data

    def close(self) -> None:
        self.stream.close()


class _NoSizeObjects(LocalObjects):
    """The local store, its opened versions hiding their size: the guard while reading must hold."""

    opened: list[_Undeclared]

    def open_version(self, key: str) -> tuple[IO[bytes], str]:
        stream, etag = super().open_version(key)
        self.opened.append(_Undeclared(stream))
        return self.opened[-1], etag  # type: ignore[return-value]


def test_a_store_that_declares_no_size_is_cut_off_at_the_limit(tmp_path, pg_url: str) -> None:
    objects = _NoSizeObjects(tmp_path / "objects")
    objects.opened = []
    data = to_csv_bytes(generate_readings(machines=5, rows=20_000, seed=7))
    objects.put("incoming/grew.csv", data)
    engine = _engine(pg_url)
    before = store.count_readings(engine)
    limit = len(data) // 4
    report = ingest.ingest_object(objects, engine, "incoming/grew.csv", chunk_bytes=64 << 10, max_bytes=limit)
    assert report.status == "rejected" and report.reason["rule"] == ingest.TOO_LARGE
    assert f"more than {limit:,} bytes" in report.reason["message"]
    assert objects.opened[0].given <= limit + (64 << 10)  # read stopped one block past the limit
    assert store.count_readings(engine) == before  # rolled back: nothing of it kept
    assert objects.get(report.filed_as) == data


def test_the_default_maximum_is_512_mib_and_configurable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MFD_MAX_FILE_BYTES", raising=False)
    assert Settings(_env_file=None).max_file_bytes == 512 * 2**20
    monkeypatch.setenv("MFD_MAX_FILE_BYTES", "1000")
    assert Settings(_env_file=None).max_file_bytes == 1000
