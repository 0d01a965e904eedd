"""`ReadingsStore`: the readings database; PostgreSQL in production, a SQLite file as the local twin."""

from __future__ import annotations

from functools import cache

import dagster as dg
import pandas as pd
from sqlalchemy.engine import Engine

from mfd.storage import readings as store


@cache
def _engine(url: str) -> Engine:
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    return engine


class ReadingsStore(dg.ConfigurableResource):
    """SQLAlchemy URL of the readings database (postgresql+psycopg://... or sqlite:///...)."""

    url: str

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
