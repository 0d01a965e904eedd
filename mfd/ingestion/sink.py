"""The good rows of each chunk into the file's table, through the one bulk writer (`mfd.storage.bulk`)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa

from mfd.ingestion.layouts import Layout
from mfd.ingestion.parsing import Chunk
from mfd.ingestion.rejection import FileRejected
from mfd.schema import KEY_COLUMNS
from mfd.storage.bulk import BulkWriter
from mfd.storage.conflicts import Differ


class ChunkSink:
    """Loads chunks inside the caller's transaction. A key already stored (or repeated) with the same values
    is a duplicate; with other values a conflict, settled by `conflict_policy` (`mfd.storage.conflicts`;
    `on_conflicts` gets the rejected ones).

    PostgreSQL gets the good rows' CSV lines as written in the file (no re-encoding); text PostgreSQL reads
    differently from pandas (a rare timestamp spelling) is sent again normalised. SQLite gets typed rows.
    """

    def __init__(
        self,
        conn: sa.Connection,
        layout: Layout,
        columns: list[str],
        source: str,
        conflict_policy: Differ,
        on_conflicts: Callable[[pd.DataFrame], None] | None = None,
    ) -> None:
        self.writer = BulkWriter(
            conn,
            layout.table,
            columns,
            conflict=KEY_COLUMNS,
            constants={"source": source},
            differ=conflict_policy,
            on_conflicts=on_conflicts,
        )
        if self.writer.postgres:
            conn.exec_driver_sql("SET LOCAL TIME ZONE 'UTC'")  # timestamps without an offset are UTC

    def write(self, chunk: Chunk, good: np.ndarray) -> tuple[int, int, int]:
        """Load the good rows of `chunk`: (rows written, inserted, conflicting); the rest were duplicates."""
        written = int(good.sum())
        before = self._conflicting()
        inserted = self._write(chunk, good)
        return written, inserted, self._conflicting() - before

    def _conflicting(self) -> int:
        return self.writer.conflicts.count if self.writer.conflicts is not None else 0

    def _write(self, chunk: Chunk, good: np.ndarray) -> int:
        if not self.writer.postgres:
            return self.writer.write_frame(chunk.typed(good))
        raw = chunk.raw(good)
        if raw is not None:
            try:
                return self.writer.write_csv(raw)
            except psycopg.errors.DataError:
                pass
        try:
            return self.writer.write_frame(chunk.typed(good))
        except psycopg.errors.DataError as exc:
            raise FileRejected(
                "database_rejected_value", str(exc).strip(), list(chunk.frame.columns)
            ) from exc
