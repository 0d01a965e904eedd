"""The good rows of each chunk into the file's table, through the one bulk writer (`mfd.storage.bulk`)."""

from __future__ import annotations

import numpy as np
import psycopg
import sqlalchemy as sa

from mfd.ingestion.layouts import Layout
from mfd.ingestion.parsing import Chunk
from mfd.ingestion.rejection import FileRejected
from mfd.schema import KEY_COLUMNS
from mfd.storage.bulk import BulkWriter


class ChunkSink:
    """Loads chunks inside the caller's transaction; a key already stored (or repeated) is a duplicate.

    PostgreSQL gets the good rows' CSV lines as written in the file (no re-encoding); text PostgreSQL reads
    differently from pandas (a rare timestamp spelling) is sent again normalised. SQLite gets typed rows.
    """

    def __init__(self, conn: sa.Connection, layout: Layout, columns: list[str], source: str) -> None:
        self.writer = BulkWriter(
            conn, layout.table, columns, conflict=KEY_COLUMNS, constants={"source": source}
        )
        if self.writer.postgres:
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # timestamps without an offset are UTC

    def write(self, chunk: Chunk, good: np.ndarray) -> tuple[int, int]:
        """Load the good rows of `chunk`: (rows written, rows inserted); the difference were duplicates."""
        written = int(good.sum())
        if not self.writer.postgres:
            return written, self.writer.write_frame(chunk.typed(good))
        raw = chunk.raw(good)
        if raw is not None:
            try:
                return written, self.writer.write_csv(raw)
            except psycopg.errors.DataError:
                pass
        try:
            return written, self.writer.write_frame(chunk.typed(good))
        except psycopg.errors.DataError as exc:
            raise FileRejected(
                "database_rejected_value", str(exc).strip(), list(chunk.frame.columns)
            ) from exc
