"""Property-based ingestion: generated files mixing good rows with stray quotes, short and long rows, bytes
that are not UTF-8, NaN, out-of-range values and implausible timestamps, cut into blocks anywhere. Every
good row loads exactly once, every bad one is set aside with its physical line, and the counts add up, on
SQLite and on PostgreSQL."""

from __future__ import annotations

import io
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from mfd.ingestion import load as ingest
from mfd.ingestion.blocks import CsvBlocks
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects
from mfd.storage.tables import readings

KEY = "incoming/generated.csv"
HEADER = (
    "machine_id,timestamp,machine_type,air_temperature_k,process_temperature_k,"
    "rotational_speed_rpm,torque_nm,tool_wear_min"
)
START = datetime(2026, 3, 1, tzinfo=UTC)
GOOD = ("good", "stray_quote", "quoted_comma")
BAD = ("short", "long", "not_utf8", "nan", "out_of_range", "year_9999", "year_1999")
SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def _line(kind: str, i: int, zone: str, torque: int, machine: int) -> tuple[bytes, tuple | None]:
    """One CSV record of `kind` (its i-th second after START) and the stored row it should give."""
    stamp = START + timedelta(seconds=i)
    text_stamp = f"{stamp:%Y-%m-%d %H:%M:%S}{zone}"
    machine_id = {"stray_quote": f'M-"{machine}', "quoted_comma": f"M-{machine}, line 2"}.get(
        kind, f"M-{machine}"
    )
    written_id = f'"{machine_id}"' if kind == "quoted_comma" else machine_id
    value = f"{torque / 10:.1f}"
    fields = [written_id, text_stamp, "L", "300.1", "310.2", "1500", value, "12"]
    if kind == "short":
        del fields[6]  # torque_nm left out: the tool wear must not load as torque
    elif kind == "long":
        fields.append("7")
    elif kind == "nan":
        fields[3] = "NaN"
    elif kind == "out_of_range":
        fields[6] = "900.5"
    elif kind in ("year_9999", "year_1999"):
        fields[1] = text_stamp.replace("2026", kind[-4:], 1)
    data = ",".join(fields).encode()
    if kind == "not_utf8":
        data = data.replace(b"M-", b"M-\xff", 1)
    expected = (machine_id, pd.Timestamp(stamp), torque / 10) if kind in GOOD else None
    return data, expected


@st.composite
def files(draw: st.DrawFn) -> dict:
    kinds = draw(st.lists(st.sampled_from(GOOD + BAD), min_size=1, max_size=60))
    zone = draw(st.sampled_from(["Z", "+00:00", ""]))  # "" takes the pandas path
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines, good, bad_lines = [HEADER.encode()], [], []
    for i, kind in enumerate(kinds):
        torque = draw(st.integers(0, 2000))
        data, expected = _line(kind, i, zone, torque, draw(st.integers(1, 3)))
        lines.append(data)
        if expected is None:
            bad_lines.append(len(lines))  # physical line: 1 is the header
        else:
            good.append(expected)
    body = newline.join(lines) + (newline if draw(st.booleans()) else b"")
    return {"body": body, "good": good, "bad_lines": bad_lines, "chunk_bytes": draw(st.integers(64, 4096))}


def _stored(engine: Engine) -> list[tuple]:
    with engine.connect() as conn:
        frame = pd.read_sql(
            sa.select(readings.c.machine_id, readings.c.timestamp, readings.c.torque_nm), conn
        )
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    return sorted(zip(frame["machine_id"], stamps, frame["torque_nm"], strict=True))


@SETTINGS
@given(case=files())
def test_every_good_row_loads_exactly_once_and_the_counts_add_up(readings_url: str, case: dict) -> None:
    engine = store.create_engine(readings_url)
    store.ensure_tables(engine)
    with engine.begin() as conn:
        conn.execute(readings.delete())
    with tempfile.TemporaryDirectory() as tmp:
        objects = LocalObjects(Path(tmp))
        objects.put(KEY, case["body"])
        report = ingest.ingest_object(objects, engine, KEY, chunk_bytes=case["chunk_bytes"])
        conflicting = report.conflicting
        rows = len(case["good"]) + len(case["bad_lines"])
        assert report.read == report.loaded + report.duplicate + conflicting + report.rejected == rows
        assert _stored(engine) == sorted(case["good"])
        if not case["good"]:
            assert (report.status, report.reason["rule"]) == ("rejected", "no_valid_rows")
            return
        assert report.status == "processed"
        assert (report.loaded, report.duplicate, conflicting) == (len(case["good"]), 0, 0)
        assert report.rejected == len(case["bad_lines"])
        if case["bad_lines"]:
            bad = pd.read_csv(io.BytesIO(objects.get(report.bad_rows_key)), dtype=str, keep_default_na=False)
            assert sorted(bad["line"].astype(int)) == case["bad_lines"]
            assert bad["reason"].str.len().gt(0).all()
        else:
            assert report.bad_rows_key is None
    engine.dispose()


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(50, 400),
    every=st.integers(1, 20),
    size=st.integers(128, 8192),
)
def test_stray_quotes_are_scanned_once_with_a_bounded_carry(rows: int, every: int, size: int) -> None:
    """However many stray quotes and wherever the reads cut: every byte is scanned once, and what is
    carried into the next buffer is at most one unfinished record per read."""
    lines = [HEADER.encode()]
    for i in range(rows):
        line, _ = _line("stray_quote" if i % every == 0 else "good", i, "Z", 405, 1)
        lines.append(line)
    data = b"\n".join(lines) + b"\n"
    blocks = CsvBlocks(io.BytesIO(data), size)
    blocks.header()
    records = sum(b.data.count(b"\n") for b in blocks)
    assert records == rows
    assert blocks.quotes.scanned <= len(data)
    longest = max(len(line) for line in lines) + 1
    assert blocks.copied <= (len(data) // size + 1) * longest
