"""Ingest one incoming CSV object: stream it in chunks, validate every row, bulk-load the good rows once,
then file the object under `processed/`, or under `rejected/` with the reason beside it.

Memory stays constant: the object is read in blocks of about `chunk_bytes` cut at record boundaries
(`blocks`). Each block is parsed (`parsing`) and checked with vectorised masks (`rows`); bad rows are
spooled beside the rejected copy (`bad_rows`), good rows go to the table through the bulk writer (`sink`),
so a (machine_id, timestamp) already stored or repeated within the file is counted as a duplicate, never
written twice. The whole file is one transaction: a failure anywhere (PostgreSQL gone, a malformed line at
the end) commits nothing, and a retry loads it exactly once.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import ServiceUnavailable
from mfd.ingestion.bad_rows import BadRows
from mfd.ingestion.blocks import CsvBlocks, check_header
from mfd.ingestion.layouts import Layout, filed_key, layout_for
from mfd.ingestion.parsing import parse
from mfd.ingestion.rejection import FileRejected
from mfd.ingestion.rows import row_problems
from mfd.ingestion.sink import ChunkSink
from mfd.storage import readings as store
from mfd.storage.objects import PROCESSED, REJECTED, ObjectMissing, Objects

CHUNK_BYTES = 8 << 20
PREVIEW_ROWS = 5
# A lost or refused database connection: the run fails, nothing from the file is committed.
DATABASE_DOWN = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


@dataclass
class IngestReport:
    """What happened to one file. Invariant: read == loaded + duplicate + rejected."""

    key: str
    kind: str
    status: str = "processed"
    read: int = 0
    loaded: int = 0
    duplicate: int = 0
    rejected: int = 0
    seconds: float = 0.0
    filed_as: str = ""
    after_id: int = 0  # every row this file loaded has a larger id (read_loaded starts there)
    bad_rows_key: str | None = None
    reason: dict[str, Any] | None = None
    problems: Counter = field(default_factory=Counter)
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


def ingest_object(objects: Objects, engine: Engine, key: str, chunk_bytes: int = CHUNK_BYTES) -> IngestReport:
    """Load the CSV object `key` into its table (see the module docstring) and file it away.

    Raises ObjectMissing when the object is gone (nothing loaded) and ServiceUnavailable when the
    database fails mid-load (nothing committed; the object stays in `incoming/` for a retry).
    """
    layout = layout_for(key)
    report = IngestReport(key=key, kind=layout.kind)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mfd-ingest-") as tmp:
        bad_rows = BadRows(Path(tmp) / "bad_rows.csv")
        try:
            stream = objects.open(key)
        except ObjectMissing as exc:
            raise ObjectMissing(
                f"{key} was deleted before it could be read, nothing loaded: {exc} "
                f"(an ingested file is under {PROCESSED} or {REJECTED})"
            ) from exc
        with closing(stream):
            blocks = CsvBlocks(stream, chunk_bytes)
            try:
                _load(engine, layout, key, blocks, report, bad_rows)
            except FileRejected as exc:
                if exc.reason["rule"] != "no_valid_rows":
                    bad_rows.discard()
                report.read = blocks.drain_lines()
                report.loaded = report.duplicate = 0
                report.rejected = report.read
                report.status, report.reason = "rejected", {"key": key, **exc.reason}
            except DATABASE_DOWN as exc:
                cause = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
                raise ServiceUnavailable(
                    f"the readings database {store.describe(str(engine.url))} failed while loading {key} "
                    f"({cause[0]}); nothing from the file was committed "
                    "and it stays in incoming/: re-run once the database is back (check MFD_DATABASE_URL)"
                ) from exc
        _file_away(objects, key, report, bad_rows)
    report.seconds = time.perf_counter() - started
    return report


def _load(
    engine: Engine, layout: Layout, key: str, blocks: CsvBlocks, report: IngestReport, bad_rows: BadRows
) -> None:
    """Parse and validate block n+1 while block n is being written (PostgreSQL works in its own process)."""
    columns = check_header(blocks.header(), blocks.first_line(), layout)
    preview: list[pd.DataFrame] = []
    pending: Future[tuple[int, int]] | None = None

    def collect() -> None:
        if pending is not None:
            written, inserted = pending.result()
            report.loaded += inserted
            report.duplicate += written - inserted

    with engine.begin() as conn, ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfd-load") as writer:
        # Ids come from a sequence: whatever this transaction inserts lands above the largest id stored now.
        report.after_id = store.max_id(conn, layout.table)
        write = ChunkSink(conn, layout, columns, key).write
        # SQLite connections stay in the thread that made them.
        submit = writer.submit if conn.dialect.name == "postgresql" else _run_now
        for block in blocks:
            chunk = parse(block, columns, layout)
            problems = row_problems(chunk, layout)
            bad = np.zeros(len(chunk.frame), dtype=bool)
            for mask in problems.values():
                bad |= mask
            good = ~bad
            report.read += len(chunk.frame)
            if bad.any():
                report.rejected += int(bad.sum())
                bad_rows.add(chunk, bad, problems, report.problems)
            if not good.any():
                continue
            if not preview:
                preview.append(chunk.typed(good).head(PREVIEW_ROWS))
            collect()
            pending = submit(write, chunk, good)
        collect()
        report.preview = preview[0] if preview else report.preview
        if report.read == 0:
            raise FileRejected("no_rows", "the file has a header but no data rows", list(columns))
        if report.loaded + report.duplicate == 0:
            raise FileRejected(
                "no_valid_rows",
                f"all {report.read} rows failed validation",
                sorted({p.split(":")[0] for p in report.problems}),
                [{"problem": p, "rows": n} for p, n in report.problems.most_common(5)],
            )


def _run_now(fn: Callable[..., tuple[int, int]], *args: Any) -> Future[tuple[int, int]]:
    """`fn(*args)` in this thread, as a finished future."""
    done: Future[tuple[int, int]] = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
        done.set_exception(exc)
    return done


def _file_away(objects: Objects, key: str, report: IngestReport, bad_rows: BadRows) -> None:
    """After the commit: bad rows and the reason beside the file, then the move (never before)."""
    if bad_rows.count:
        report.bad_rows_key = f"{filed_key(key, REJECTED)}.bad_rows.csv"
        objects.upload(report.bad_rows_key, bad_rows.close())
    if report.status == "rejected":
        report.filed_as = filed_key(key, REJECTED)
        objects.put(
            f"{report.filed_as}.reason.json", json.dumps(report.reason, indent=2, default=str).encode()
        )
    else:
        report.filed_as = filed_key(key, PROCESSED)
    objects.move(key, report.filed_as)


def read_loaded(engine: Engine, key: str, limit: int | None = None, after_id: int = 0) -> pd.DataFrame:
    """Rows loaded from the object `key`, in load order (at most `limit`); `after_id` (the report's) lets the
    database start from the primary key instead of scanning the whole table."""
    table = layout_for(key).table
    query = sa.select(table).where(table.c.id > after_id, table.c.source == key).order_by(table.c.id)
    return store.read_frame(engine, query, limit)
