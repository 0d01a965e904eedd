"""Parsing a plant can trust: stray quotes in linear time and bounded memory, a wrong field count as a bad
row with its physical line, plausible timestamps on both parse paths, the transaction opened late."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.generator import generate_readings, to_csv_bytes
from mfd.ingestion import load as ingest
from mfd.ingestion.blocks import CsvBlocks
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects
from mfd.validation import TimestampWindow

KEY = "incoming/batch.csv"
HEADER = (
    "machine_id,timestamp,machine_type,air_temperature_k,process_temperature_k,"
    "rotational_speed_rpm,torque_nm,tool_wear_min"
)


def _engine(url: str) -> Engine:
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    return engine


def _objects(tmp_path: Path) -> LocalObjects:
    return LocalObjects(tmp_path / "objects")


def _bad_rows(objects: LocalObjects, report: ingest.IngestReport) -> pd.DataFrame:
    assert report.bad_rows_key is not None
    return pd.read_csv(io.BytesIO(objects.get(report.bad_rows_key)), dtype=str, keep_default_na=False)


def _row(i: int, zone: str = "Z", machine: str = "M-1", torque: str = "40.5", wear: str = "12") -> str:
    stamp = (datetime(2026, 3, 1, tzinfo=UTC) + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S")
    return f"{machine},{stamp}{zone},L,300.1,310.2,1500,{torque},{wear}"


def _stray(rows: int) -> bytes:
    """The generator's CSV with a stray quote in every machine id of one machine (M-"0003)."""
    return to_csv_bytes(generate_readings(machines=10, rows=rows, seed=1)).replace(b"M-0003,", b'M-"0003,')


def test_stray_quote_in_a_field_loads_as_written(tmp_path: Path, readings_url: str) -> None:
    objects, engine = _objects(tmp_path), _engine(readings_url)
    frame = generate_readings(machines=10, rows=3000, seed=1)
    objects.put(KEY, to_csv_bytes(frame).replace(b"M-0003,", b'M-"0003,'))
    report = ingest.ingest_object(objects, engine, KEY, chunk_bytes=8 << 10)
    assert (report.status, report.read, report.loaded, report.rejected) == ("processed", 3000, 3000, 0)
    back = ingest.read_loaded(engine, KEY)
    assert (back["machine_id"] == 'M-"0003').sum() == (frame["machine_id"] == "M-0003").sum() > 0
    assert not back["machine_id"].eq("M-0003").any()
    pd.testing.assert_series_equal(back["torque_nm"], frame["torque_nm"].reset_index(drop=True))


def test_stray_quote_parse_work_is_linear_in_the_file() -> None:
    """Bytes scanned for quotes and bytes carried between reads, for n and 4n rows (the old splitter
    counted quotes from byte 0 for every candidate newline: 4x the rows, ~16x the work)."""

    def work(data: bytes) -> tuple[int, int]:
        blocks = CsvBlocks(io.BytesIO(data), 4 << 10)
        blocks.header()
        assert sum(b.data.count(b"\n") for b in blocks) == data.count(b"\n") - 1
        return blocks.quotes.scanned, blocks.copied

    small, large = _stray(2_000), _stray(8_000)
    (scanned_small, copied_small), (scanned_large, copied_large) = work(small), work(large)
    assert scanned_small <= len(small) and scanned_large <= len(large)
    assert scanned_large <= 4.2 * scanned_small
    # What is carried into the next buffer is an unfinished record: at most a line per read.
    reads = len(large) // (4 << 10) + 1
    assert copied_large <= reads * 200 and copied_large <= 4.5 * max(copied_small, 1) + 200


def test_quote_that_never_closes_is_bounded_and_names_its_line(tmp_path: Path) -> None:
    objects = _objects(tmp_path)
    rows = [_row(i) for i in range(30_000)]
    rows[100] = rows[100].replace("M-1,", '"M-1,', 1)  # opens a quoted field that runs to the end (> 1 MiB)
    objects.put(KEY, "\n".join([HEADER, *rows]).encode())
    blocks = CsvBlocks(objects.open(KEY), 4 << 10, max_record=64 << 10)
    blocks.header()
    with pytest.raises(ingest.FileRejected, match=r"line 102: a quoted field opened here is still open"):
        for block in blocks:
            assert len(block.data) < (64 << 10) + (8 << 10)
    assert len(blocks.pending) <= (64 << 10) + (4 << 10)  # stopped at the bound, not at the end of the file
    assert not blocks.eof
    # Through ingest_object the whole file is rejected as malformed, with the line: the quote is still open
    # after 1 MiB, so no record end can be trusted (one ending with the file is set aside alone instead).
    report = ingest.ingest_object(objects, _engine(f"sqlite:///{tmp_path / 'r.db'}"), KEY)
    assert report.reason["rule"] == "malformed_csv" and "line 102" in report.reason["message"]
    assert report.read == report.rejected == 30_000


@pytest.mark.parametrize("zone", ["Z", ""], ids=["arrow-path", "pandas-path"])
def test_short_and_long_rows_are_bad_rows_with_their_physical_line(
    zone: str, tmp_path: Path, readings_url: str
) -> None:
    objects, engine = _objects(tmp_path), _engine(readings_url)
    rows = [_row(i, zone) for i in range(40)]
    rows[3] = _row(3, zone, machine='"M-1\nsecond line"')  # a record over lines 5-6
    rows[10] = rows[10].rsplit(",", 2)[0] + ",12"  # torque_nm left out: 7 fields (line 12)
    rows[20] += ",1,2"  # 10 fields (line 22)
    rows[30] = ""  # a blank line is no record (line 32)
    objects.put(KEY, "\n".join([HEADER, *rows]).encode())
    report = ingest.ingest_object(objects, engine, KEY, chunk_bytes=512)
    assert report.status == "processed"
    assert (report.read, report.loaded, report.duplicate, report.rejected) == (39, 37, 0, 2)
    assert report.problems == {"row: 7 fields, the header has 8": 1, "row: 10 fields, the header has 8": 1}
    bad = _bad_rows(objects, report)
    assert list(bad["line"]) == ["13", "23"]  # line 1 is the header; rows[3] spans two lines
    assert list(bad["reason"]) == ["row: 7 fields, the header has 8", "row: 10 fields, the header has 8"]
    assert bad["tool_wear_min"].iloc[1] == "12,1,2"  # a long row's extra fields stay in the last column
    assert bad["machine_id"].tolist() == ["M-1", "M-1"]
    back = ingest.read_loaded(engine, KEY)
    assert len(back) == 37 and back["torque_nm"].eq(40.5).all() and back["tool_wear_min"].eq(12).all()
    assert "M-1\nsecond line" in set(back["machine_id"])


def test_value_with_a_line_break_loads_intact_on_postgres(tmp_path: Path, pg_url: str) -> None:
    objects, engine = _objects(tmp_path), _engine(pg_url)
    objects.put(KEY, "\n".join([HEADER, _row(0, machine='"M-1\nsecond line"'), _row(1)]).encode())
    assert ingest.ingest_object(objects, engine, KEY).loaded == 2
    assert "M-1\nsecond line" in set(ingest.read_loaded(engine, KEY)["machine_id"])


@pytest.mark.parametrize("zone", ["Z", ""], ids=["arrow-path", "pandas-path"])
def test_a_bare_cr_ends_a_line(zone: str, tmp_path: Path, readings_url: str) -> None:
    """Line ends are LF, CRLF or a bare CR: two rows joined by a bare CR are two rows, on their own lines."""
    objects, engine = _objects(tmp_path), _engine(readings_url)
    rows = [_row(i, zone) for i in range(10)]
    rows[4] = rows[4] + "\r" + rows.pop(5)
    rows[7] = _row(7, zone, torque="900")
    objects.put(KEY, "\n".join([HEADER, *rows]).encode())
    report = ingest.ingest_object(objects, engine, KEY)
    assert (report.read, report.loaded, report.rejected) == (10, 9, 1)
    bad = _bad_rows(objects, report)
    assert list(bad["line"]) == ["10"] and list(bad["reason"]) == ["torque_nm: outside [0, 200] Nm"]


def test_bad_values_report_their_physical_line(tmp_path: Path, readings_url: str) -> None:
    objects, engine = _objects(tmp_path), _engine(readings_url)
    rows = [_row(i) for i in range(10)]
    rows[1] = _row(1, machine='"M-1\n\nthree lines"')
    rows[6] = _row(6, torque="900")
    objects.put(KEY, ("\ufeff" + "\r\n".join([HEADER, *rows])).encode())
    report = ingest.ingest_object(objects, engine, KEY)
    bad = _bad_rows(objects, report)
    assert list(bad["line"]) == ["10"] and bad["reason"].iloc[0] == "torque_nm: outside [0, 200] Nm"


@pytest.mark.parametrize("zone", ["Z", ""], ids=["arrow-path", "pandas-path"])
def test_implausible_timestamps_are_bad_rows_on_both_paths(
    zone: str, tmp_path: Path, readings_url: str
) -> None:
    objects, engine = _objects(tmp_path), _engine(readings_url)
    rows = [_row(i, zone) for i in range(10)]
    rows[2] = rows[2].replace("2026-03-01", "9999-12-31")
    rows[5] = rows[5].replace("2026-03-01", "1999-12-31")
    tomorrow = datetime.now(UTC) + timedelta(days=2)
    rows[7] = rows[7].replace("2026-03-01", f"{tomorrow:%Y-%m-%d}")
    if not zone:  # not a date at all (Arrow cannot type it either, so only on the pandas path)
        rows[8] = rows[8].replace("2026-03-01", "2026-02-30")
    objects.put(KEY, "\n".join([HEADER, *rows]).encode())
    report = ingest.ingest_object(objects, engine, KEY)
    unparsable = 0 if zone else 1
    assert (report.read, report.loaded, report.rejected) == (10, 7 - unparsable, 3 + unparsable)
    bad = _bad_rows(objects, report)
    assert list(bad["line"]) == ["4", "7", "9", "10"][: 3 + unparsable]
    window = list(bad["reason"].iloc[:3])
    assert len(set(window)) == 1 and report.problems[window[0]] == 3
    assert window[0].startswith("timestamp: outside [2000-01-01 00:00:00Z, ")
    assert "from 2000-01-01 00:00Z to 1 day ahead of the clock" in window[0]
    assert list(bad["reason"].iloc[3:]) == ["timestamp: not an ISO 8601 timestamp"] * unparsable
    assert ingest.read_loaded(engine, KEY)["timestamp"].dt.year.eq(2026).all()


def test_configured_window_comes_from_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFD_TIMESTAMP_MIN", "2026-03-01T00:00:05Z")
    monkeypatch.setenv("MFD_TIMESTAMP_MAX_AHEAD", "PT6H")
    window = Settings(_env_file=None).timestamp_window()
    assert window == TimestampWindow(datetime(2026, 3, 1, 0, 0, 5, tzinfo=UTC), timedelta(hours=6))
    objects, engine = _objects(tmp_path), _engine(f"sqlite:///{tmp_path / 'r.db'}")
    objects.put(KEY, "\n".join([HEADER, *(_row(i) for i in range(10))]).encode())
    report = ingest.ingest_object(objects, engine, KEY, window=window)
    assert (report.loaded, report.rejected) == (5, 5)
    (label,) = report.problems
    assert label.startswith("timestamp: outside [2026-03-01 00:00:05Z, ") and "6 hours ahead" in label


def test_invalid_utf8_in_a_row_is_a_bad_row(tmp_path: Path, readings_url: str) -> None:
    objects, engine = _objects(tmp_path), _engine(readings_url)
    rows = [_row(i).encode() for i in range(10)]
    rows[4] = rows[4].replace(b"M-1", b"M-\xff1")
    objects.put(KEY, b"\n".join([HEADER.encode(), *rows]))
    report = ingest.ingest_object(objects, engine, KEY)
    assert (report.status, report.loaded, report.rejected) == ("processed", 9, 1)
    bad = _bad_rows(objects, report)
    assert list(bad["line"]) == ["6"] and list(bad["reason"]) == ["row: not UTF-8 text"]


def test_transaction_opens_only_when_the_first_block_is_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, readings_url: str
) -> None:
    objects, engine = _objects(tmp_path), _engine(readings_url)
    parsed: list[int] = []
    at_begin: list[int] = []
    real_parse = ingest.parse
    monkeypatch.setattr(ingest, "parse", lambda *a: parsed.append(1) or real_parse(*a))
    sa.event.listen(engine, "begin", lambda conn: at_begin.append(len(parsed)))
    rows = [_row(i, torque="900") for i in range(200)] + [_row(i) for i in range(200, 400)]
    objects.put(KEY, "\n".join([HEADER, *rows]).encode())
    report = ingest.ingest_object(objects, engine, KEY, chunk_bytes=2 << 10)
    assert (report.loaded, report.rejected) == (200, 200)
    # Blocks of only bad rows never open it; it opens once, after the first block with good rows.
    assert len(at_begin) == 1 and at_begin[0] > 1
    objects.put(KEY, "\n".join([HEADER, *rows[:200]]).encode())
    assert ingest.ingest_object(objects, engine, KEY).reason["rule"] == "no_valid_rows"
    assert len(at_begin) == 1
