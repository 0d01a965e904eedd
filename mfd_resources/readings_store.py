"""`ReadingsStore`: the readings database; PostgreSQL in production, a SQLite file as the local twin."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from functools import cache
from typing import Literal

import dagster as dg
import pandas as pd
from sqlalchemy.engine import Engine

from mfd.storage import readings as store
from mfd.validation import TimestampWindow

_ENGINE_LOCK = threading.Lock()


def _engine(url: str) -> Engine:
    # One engine per URL and process. Locked: the code server evaluates sensors on threads, and two
    # first ticks creating the tables at once collide in PostgreSQL's catalog (UniqueViolation on pg_type).
    with _ENGINE_LOCK:
        return _created_engine(url)


@cache
def _created_engine(url: str) -> Engine:
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    return engine


class ReadingsStore(dg.ConfigurableResource):
    """SQLAlchemy URL of the readings database (postgresql+psycopg://... or sqlite:///...), and how
    ingestion treats what it loads into it (from MFD_CONFLICT_POLICY, MFD_TIMESTAMP_MIN/_MAX_AHEAD,
    MFD_MAX_FILE_BYTES)."""

    url: str
    conflict_policy: Literal["reject", "replace"] = "reject"
    timestamp_min: str = TimestampWindow.earliest.isoformat()  # ISO 8601 (Dagster config holds no datetime)
    timestamp_max_ahead_s: float = TimestampWindow.ahead.total_seconds()
    max_file_bytes: int = 512 * 2**20  # MFD_MAX_FILE_BYTES: a larger incoming file is rejected unread

    def timestamp_window(self) -> TimestampWindow:
        """The plausible reading times ingestion accepts."""
        return TimestampWindow(
            datetime.fromisoformat(self.timestamp_min), timedelta(seconds=self.timestamp_max_ahead_s)
        )

    @property
    def engine(self) -> Engine:
        return _engine(self.url)

    def insert(self, df: pd.DataFrame, source: str | None = None) -> int:
        """Bulk insert (COPY on PostgreSQL), skipping readings already stored; returns rows inserted."""
        return store.insert_readings(self.engine, df, source)

    def read(self, after_id: int = 0, limit: int | None = None) -> pd.DataFrame:
        """Readings with id > after_id in id order."""
        return store.read_readings(self.engine, after_id, limit)

    def count(self) -> int:
        return store.count_readings(self.engine)

    def describe(self) -> str:
        return store.describe(self.url)
