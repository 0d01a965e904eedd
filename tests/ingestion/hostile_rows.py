"""Rows for hostile-input tests, built from the readings layout (no column named here): cells as text, the
file they make, and the rows a database holds, in one comparable form."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.ingestion.layouts import READINGS
from mfd.schema import KEY_COLUMNS
from mfd.storage import readings as store

LAYOUT = READINGS
MACHINE, STAMP = KEY_COLUMNS
COLUMNS = list(LAYOUT.required)
NUMBERS = [c for c in COLUMNS if c in LAYOUT.ranges]
START = datetime(2026, 3, 1, tzinfo=UTC)
KEY = "incoming/hostile.csv"


def cells(i: int, machine: str = "M-1", step: int = 0, **over: str) -> dict[str, str]:
    """The i-th reading's cells as text: valid values, the timestamp `i` seconds after START."""
    out: dict[str, str] = {}
    for c in COLUMNS:
        if c == MACHINE:
            out[c] = machine
        elif c == STAMP:
            out[c] = f"{START + timedelta(seconds=i):%Y-%m-%dT%H:%M:%S}Z"
        elif c in LAYOUT.ranges:
            r = LAYOUT.ranges[c]
            out[c] = f"{r.low + (r.high - r.low) * ((i * 7 + step + NUMBERS.index(c)) % 97 + 1) / 100:.1f}"
        elif c in LAYOUT.categories:
            out[c] = LAYOUT.categories[c][0]
        else:
            out[c] = "0"
    out.update(over)
    return out


def line(values: dict[str, str], columns: list[str] | None = None) -> str:
    return ",".join(values[c] for c in columns or COLUMNS)


def header(columns: list[str] | None = None) -> str:
    return ",".join(columns or COLUMNS)


def expected(values: dict[str, str]) -> tuple:
    """The stored form of a row from its source cells: key as written, instant in UTC, numbers as floats."""
    return (
        values[MACHINE],
        _utc(pd.Timestamp(values[STAMP])),
        *(float(values[c]) for c in NUMBERS),
    )


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize(UTC) if stamp.tzinfo is None else stamp.tz_convert(UTC)


def stored(engine: Engine) -> list[tuple]:
    """Every row of the readings table in the form of `expected`, sorted."""
    table = LAYOUT.table
    with engine.connect() as conn:
        frame = pd.read_sql(sa.select(*(table.c[c] for c in [MACHINE, STAMP, *NUMBERS])), conn)
    frame[STAMP] = pd.to_datetime(frame[STAMP], utc=True)
    return sorted(frame.itertuples(index=False, name=None))


def fresh(url: str) -> Engine:
    """The readings database at `url`, its tables there and empty."""
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    with engine.begin() as conn:
        conn.execute(LAYOUT.table.delete())
    return engine
