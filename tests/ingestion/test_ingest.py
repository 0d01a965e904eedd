"""mfd.ingestion.load against the real S3 server and real PostgreSQL (and the local/SQLite twins where cheap):
every bad-input case, duplicates, exactly-once after a database failure, constant memory."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tracemalloc
from pathlib import Path
from typing import IO

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import ServiceUnavailable
from mfd.generator import generate_peripheral, generate_readings, inject_defects, to_csv_bytes
from mfd.ingestion import load as ingest
from mfd.services import S3Server, as_postgres_user, pg_binary, postgres_server
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, ObjectMissing, Objects, S3Objects, archive_key
from mfd.storage.tables import peripheral_readings, readings

KEY = "incoming/batch.csv"


@pytest.fixture
def s3_objects(s3: S3Server, bucket: str) -> S3Objects:
    return S3Objects(s3.client(), bucket)


@pytest.fixture
def pg(pg_url: str) -> Engine:
    engine = store.create_engine(pg_url)
    store.ensure_tables(engine)
    return engine


@pytest.fixture(scope="module")
def clean() -> pd.DataFrame:
    return generate_readings(machines=10, rows=2000, seed=7)


def _engine(url: str) -> Engine:
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    return engine


def _count(engine: Engine, table: sa.Table = readings) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def _adds_up(report: ingest.IngestReport) -> bool:
    return report.read == report.loaded + report.duplicate + report.conflicting + report.rejected


def _filed(folder: str, content: bytes, key: str = KEY) -> str:
    """Where `content` uploaded as `key` is archived: the name carries its version (ETag = MD5 here)."""
    return archive_key(key, folder, hashlib.md5(content).hexdigest())


def test_clean_file_is_loaded_once_and_moved_to_processed(
    s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame
) -> None:
    s3_objects.put(KEY, to_csv_bytes(clean))
    report = ingest.ingest_object(s3_objects, pg, KEY)
    assert (report.status, report.read, report.loaded, report.duplicate, report.rejected) == (
        "processed",
        2000,
        2000,
        0,
        0,
    )
    assert report.filed_as == _filed("processed/", to_csv_bytes(clean)) and s3_objects.exists(report.filed_as)
    assert not s3_objects.exists(KEY) and report.bad_rows_key is None
    back = ingest.read_loaded(pg, KEY)
    assert len(back) == 2000 and _count(pg) == 2000
    pd.testing.assert_series_equal(back["torque_nm"], clean["torque_nm"].reset_index(drop=True))
    assert (back["timestamp"] == clean["timestamp"].dt.floor("us").reset_index(drop=True)).all()
    assert back["machine_failure"].sum() == clean["machine_failure"].sum()
    assert len(report.preview) == ingest.PREVIEW_ROWS


def test_bad_rows_are_rejected_with_reasons_and_good_rows_loaded(
    objects: Objects, readings_url: str, clean: pd.DataFrame
) -> None:
    engine = _engine(readings_url)
    dirty, defects = inject_defects(clean, rate=0.1, seed=3)
    objects.put(KEY, to_csv_bytes(dirty))
    [listed] = objects.list("incoming/")  # S3: the content's MD5; local: its inode, size and mtime
    report = ingest.ingest_object(objects, engine, KEY)
    bad_values = defects["nan"] + defects["out_of_range"] + defects["text"] + defects["bad_type"]
    assert report.status == "processed" and _adds_up(report)
    assert report.read == len(dirty)
    assert report.rejected == bad_values
    assert report.duplicate == defects["duplicate"]
    assert report.loaded == len(clean) - bad_values == _count(engine)
    assert report.problems["machine_type: not one of L, M, H"] == defects["bad_type"]
    assert sum(n for p, n in report.problems.items() if p.endswith("not a number")) == defects["text"]
    bad = pd.read_csv(
        pd.io.common.BytesIO(objects.get(report.bad_rows_key)), dtype=str, keep_default_na=False
    )
    filed = archive_key(KEY, "rejected/", listed.etag)
    assert report.bad_rows_key == f"{filed}.bad_rows.csv" and len(bad) == report.rejected
    assert bad["reason"].str.len().gt(0).all()
    assert (bad["machine_type"] == "X").sum() == defects["bad_type"]
    assert bad.apply(lambda r: "sensor-error" in r.values, axis=1).sum() == defects["text"]
    assert objects.exists(archive_key(KEY, "processed/", listed.etag))


WHOLE_FILE_CASES = {
    "zero_bytes": (b"", "empty_file"),
    "header_only": (None, "no_rows"),
    "missing_columns": (None, "missing_columns"),
    "extra_columns": (None, "unexpected_columns"),
    "wrong_delimiter": (None, "wrong_delimiter"),
    "all_rows_bad": (None, "no_valid_rows"),
    "duplicate_columns": (None, "duplicate_columns"),
}


def _whole_file_case(name: str, clean: pd.DataFrame) -> bytes:
    text = to_csv_bytes(clean.head(50)).decode()
    header, *rows = text.splitlines()
    if name == "header_only":
        return (header + "\n").encode()
    if name == "missing_columns":
        return to_csv_bytes(clean.head(50).drop(columns=["torque_nm"]))
    if name == "extra_columns":
        return to_csv_bytes(clean.head(50).assign(operator="ann"))
    if name == "wrong_delimiter":
        return text.replace(",", ";").encode()
    if name == "all_rows_bad":
        return to_csv_bytes(clean.head(50).assign(machine_type="Q"))
    if name == "duplicate_columns":
        return "\n".join([header + ",torque_nm", *(r + ",1" for r in rows)]).encode()
    raise AssertionError(name)


@pytest.mark.parametrize("case", sorted(WHOLE_FILE_CASES))
def test_unusable_file_is_rejected_whole_with_reason(
    case: str, s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame
) -> None:
    content, rule = WHOLE_FILE_CASES[case]
    content = content if content is not None else _whole_file_case(case, clean)
    s3_objects.put(KEY, content)
    report = ingest.ingest_object(s3_objects, pg, KEY)
    assert report.status == "rejected" and report.reason["rule"] == rule
    assert report.loaded == report.duplicate == 0 and _adds_up(report) and _count(pg) == 0
    assert not s3_objects.exists(KEY) and s3_objects.exists(_filed("rejected/", content))
    reason = json.loads(s3_objects.get(f"{_filed('rejected/', content)}.reason.json"))
    assert reason["rule"] == rule and reason["key"] == KEY and reason["message"]
    assert {"columns", "examples"} <= set(reason)
    if case == "missing_columns":
        assert reason["columns"] == ["torque_nm"] and reason["examples"]["machine_id"] == "M-0001"
    if case == "extra_columns":
        assert reason["columns"] == ["operator"] and reason["examples"] == {"operator": "ann"}
    if case in ("header_only", "zero_bytes"):
        assert report.read == 0
    else:
        assert report.read == report.rejected > 0


def test_an_unclosed_quote_near_the_end_sets_aside_its_record_and_loads_the_rest(
    s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame
) -> None:
    text = to_csv_bytes(clean).decode().splitlines()
    text[-5] += ',"unterminated'  # the file ends inside this quote: lines 1997-2001 are one record
    s3_objects.put(KEY, "\n".join(text).encode())
    report = ingest.ingest_object(s3_objects, pg, KEY, chunk_bytes=8 << 10)
    assert report.status == "processed" and _adds_up(report)
    assert (report.read, report.loaded, report.rejected) == (len(clean) - 4, len(clean) - 5, 1)
    assert _count(pg) == len(clean) - 5
    bad = pd.read_csv(pd.io.common.BytesIO(s3_objects.get(report.bad_rows_key)), dtype=str)
    assert list(bad["line"]) == [str(len(clean) - 3)] and "never closes" in bad["reason"][0]


def test_duplicates_within_and_across_files_are_counted_never_written_twice(
    s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame
) -> None:
    first, second = clean.iloc[:1200], clean.iloc[800:]
    s3_objects.put("incoming/one.csv", to_csv_bytes(pd.concat([first, first.iloc[:100]])))
    one = ingest.ingest_object(s3_objects, pg, "incoming/one.csv")
    assert (one.read, one.loaded, one.duplicate) == (1300, 1200, 100)
    s3_objects.put("incoming/two.csv", to_csv_bytes(second))
    two = ingest.ingest_object(s3_objects, pg, "incoming/two.csv")
    assert (two.read, two.loaded, two.duplicate, two.rejected) == (1200, 800, 400, 0)
    assert _count(pg) == 2000
    keys = pd.read_sql("SELECT machine_id, timestamp FROM readings", pg)
    assert not keys.duplicated().any()


def test_same_instant_in_other_spellings_is_a_duplicate(s3_objects: S3Objects, pg: Engine) -> None:
    row = "L,300.1,310.2,1500,40.0,10,0"
    header = "machine_id,timestamp,machine_type,air_temperature_k,process_temperature_k,"
    header += "rotational_speed_rpm,torque_nm,tool_wear_min,machine_failure"
    spellings = ["2026-03-01 10:00:00", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00+01:00"]
    body = "\n".join([header, *(f"M-1,{ts},{row}" for ts in spellings), f"M-1,2026-03-01 10:00:01,{row}"])
    s3_objects.put(KEY, body.encode())
    report = ingest.ingest_object(s3_objects, pg, KEY)
    assert (report.read, report.loaded, report.duplicate) == (4, 2, 2)
    stored = ingest.read_loaded(pg, KEY)["timestamp"]
    assert list(stored) == [
        pd.Timestamp("2026-03-01 10:00:00", tz="UTC"),
        pd.Timestamp("2026-03-01 10:00:01", tz="UTC"),
    ]


def test_changed_file_under_the_same_name_adds_only_new_rows(
    s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame
) -> None:
    s3_objects.put(KEY, to_csv_bytes(clean.iloc[:1000]))
    first = ingest.ingest_object(s3_objects, pg, KEY)
    s3_objects.put(KEY, to_csv_bytes(clean.iloc[:1500]))
    # Small chunks: the early ones hit stored keys (COPY stopped, merged), the later ones are all new.
    again = ingest.ingest_object(s3_objects, pg, KEY, chunk_bytes=16 << 10)
    assert (again.loaded, again.duplicate) == (500, 1000) and _count(pg) == 1500
    assert s3_objects.get(again.filed_as) == to_csv_bytes(clean.iloc[:1500])
    assert s3_objects.get(first.filed_as) == to_csv_bytes(clean.iloc[:1000])  # both versions archived
    assert (first.after_id, again.after_id) == (0, 1000)  # the first load's ids are 1..1000
    # From the report's after_id, read_loaded returns exactly the rows the second load added.
    added = ingest.read_loaded(pg, KEY, after_id=again.after_id)
    assert len(added) == 500 and set(added["timestamp"]) == set(
        clean["timestamp"].iloc[1000:1500].dt.floor("us")
    )


def test_quoted_fields_crlf_and_bom_load_through_the_normalised_path(
    s3_objects: S3Objects, pg: Engine
) -> None:
    frame = generate_readings(machines=3, rows=300, seed=1)
    frame["machine_id"] = frame["machine_id"].str.replace("M-", "line 4, M-")
    csv_text = frame.to_csv(index=False, lineterminator="\r\n", date_format="%Y-%m-%dT%H:%M:%S.%fZ")
    s3_objects.put(KEY, b"\xef\xbb\xbf" + csv_text.encode())
    report = ingest.ingest_object(s3_objects, pg, KEY, chunk_bytes=4 << 10)
    assert (report.status, report.loaded, report.rejected) == ("processed", 300, 0)
    assert set(ingest.read_loaded(pg, KEY)["machine_id"]) == set(frame["machine_id"])


def test_blank_lines_are_not_rows(s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame) -> None:
    header, *rows = to_csv_bytes(clean.iloc[:100]).decode().splitlines()
    s3_objects.put(KEY, "\n".join([header, *rows[:50], "", *rows[50:], "", "", ""]).encode())
    report = ingest.ingest_object(s3_objects, pg, KEY)
    assert (report.status, report.read, report.loaded, report.rejected) == ("processed", 100, 100, 0)


def test_peripheral_file_goes_to_its_own_table(
    s3_objects: S3Objects, pg: Engine, clean: pd.DataFrame
) -> None:
    peripheral = generate_peripheral(clean, seed=7)
    key = "incoming/peripheral/devices.csv"
    s3_objects.put(key, to_csv_bytes(pd.concat([peripheral, peripheral.iloc[:5]])))
    report = ingest.ingest_object(s3_objects, pg, key)
    assert report.kind == "peripheral" and (report.loaded, report.duplicate) == (len(peripheral), 5)
    assert _count(pg, peripheral_readings) == len(peripheral) and _count(pg) == 0
    assert s3_objects.exists(
        _filed("processed/", to_csv_bytes(pd.concat([peripheral, peripheral.iloc[:5]])), key)
    )
    s3_objects.put(key, to_csv_bytes(peripheral.drop(columns=["vibration_mm_s"])))
    assert ingest.ingest_object(s3_objects, pg, key).reason["columns"] == ["vibration_mm_s"]


def test_file_deleted_between_listing_and_reading_loads_nothing(s3_objects: S3Objects, pg: Engine) -> None:
    s3_objects.put(KEY, b"machine_id,timestamp\n")
    listed = s3_objects.list("incoming/")
    s3_objects.delete(KEY)
    with pytest.raises(ObjectMissing, match="incoming/batch.csv was deleted before it could be read"):
        ingest.ingest_object(s3_objects, pg, listed[0].key)
    assert _count(pg) == 0 and s3_objects.list("") == []


class _StopsPostgres:
    """The real object store, whose stream stops the real PostgreSQL server after the first block."""

    def __init__(self, objects: Objects, stop: callable) -> None:
        self.objects, self.stop = objects, stop

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate everything else
        return getattr(self.objects, name)

    def open_version(self, key: str) -> tuple[IO[bytes], str]:
        (stream, etag), stop = self.objects.open_version(key), self.stop

        class Stream:
            blocks = 0

            def read(self, size: int = -1) -> bytes:
                Stream.blocks += 1
                if Stream.blocks == 3:
                    stop()
                return stream.read(size)

            def close(self) -> None:
                stream.close()

        return Stream(), etag


def test_postgres_down_mid_load_fails_cleanly_and_retry_loads_exactly_once(
    s3_objects: S3Objects, clean: pd.DataFrame
) -> None:
    with postgres_server() as server:
        with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="mfd") as conn:
            data_dir = Path(conn.execute("SHOW data_directory").fetchone()[0])
        pg_ctl = pg_binary("pg_ctl")

        def stop() -> None:
            subprocess.run(
                as_postgres_user([pg_ctl, "-D", str(data_dir), "-m", "fast", "-w", "stop"]),
                check=True,
                capture_output=True,
            )

        engine = _engine(server.url())
        s3_objects.put(KEY, to_csv_bytes(clean))
        with pytest.raises(ServiceUnavailable, match="nothing from the file was committed.*MFD_DATABASE_URL"):
            ingest.ingest_object(_StopsPostgres(s3_objects, stop), engine, KEY, chunk_bytes=16 << 10)
        assert s3_objects.exists(KEY) and not s3_objects.list("processed/")
        log = data_dir.parent / "postgres.log"
        subprocess.run(
            as_postgres_user([pg_ctl, "-D", str(data_dir), "-l", str(log), "-w", "restart"]),
            check=True,
            capture_output=True,
        )
        engine.dispose()
        assert _count(engine) == 0
        report = ingest.ingest_object(s3_objects, engine, KEY, chunk_bytes=16 << 10)
        assert (report.loaded, report.duplicate, report.rejected) == (len(clean), 0, 0)
        assert _count(engine) == len(clean)
        engine.dispose()


def _peak_bytes(objects: Objects, engine: Engine, key: str) -> int:
    tracemalloc.start()
    try:
        report = ingest.ingest_object(objects, engine, key, chunk_bytes=32 << 10)
        assert report.status == "processed" and report.loaded == report.read
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_the_file_grows(s3_objects: S3Objects, pg: Engine) -> None:
    """A stand-in for the 5,000,000-row file (bench/ingest.py): 16x the rows, about the same peak memory."""
    small = to_csv_bytes(generate_readings(machines=20, rows=5_000, seed=1))
    large = to_csv_bytes(generate_readings(machines=20, rows=80_000, seed=2))
    s3_objects.put("incoming/small.csv", small)
    s3_objects.put("incoming/large.csv", large)
    small_peak = _peak_bytes(s3_objects, pg, "incoming/small.csv")
    large_peak = _peak_bytes(s3_objects, pg, "incoming/large.csv")
    assert len(large) > 15 * len(small)
    assert large_peak < 2 * small_peak, (small_peak, large_peak)
    assert large_peak < len(large) / 2, (large_peak, len(large))
    assert _count(pg) == 85_000


def test_local_twin_files_away_like_s3(tmp_path: Path, clean: pd.DataFrame) -> None:
    objects = LocalObjects(tmp_path / "objects")
    engine = _engine(f"sqlite:///{tmp_path / 'r.db'}")
    objects.put(KEY, b"machine_id;timestamp;machine_type\nM-1;2026-01-01;L\n")
    [wrong] = objects.list("incoming/")
    report = ingest.ingest_object(objects, engine, KEY)
    assert report.reason["rule"] == "wrong_delimiter" and (tmp_path / "objects" / report.filed_as).exists()
    objects.put(KEY, to_csv_bytes(clean.iloc[:100]))
    [good] = objects.list("incoming/")
    assert ingest.ingest_object(objects, engine, KEY).loaded == 100
    assert sorted(o.key for o in objects.list("")) == [
        archive_key(KEY, "processed/", good.etag),
        archive_key(KEY, "rejected/", wrong.etag),
        f"{archive_key(KEY, 'rejected/', wrong.etag)}.reason.json",
    ]


def test_cli_ingests_everything_waiting_in_the_local_twin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, clean: pd.DataFrame
) -> None:
    from mfd.cli.main import main

    for name in [n for n in os.environ if n.startswith("MFD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    objects = LocalObjects(tmp_path / "objects")
    objects.put("incoming/a.csv", to_csv_bytes(clean.iloc[:300]))
    objects.put("incoming/b.csv", b"")
    assert main(["ingest"]) == 1
    out = capsys.readouterr().out
    assert (
        "incoming/a.csv: processed, read 300 = loaded 300 + duplicate 0 + conflicting 0 + rejected 0" in out
    )
    assert "rejected whole: empty_file" in out
    assert main(["ingest"]) == 0 and "nothing under incoming/" in capsys.readouterr().out
    assert main(["ingest", "processed/a.csv"]) == 2
    assert "keys must be under incoming/" in capsys.readouterr().err
