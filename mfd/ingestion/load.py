"""Ingest one incoming CSV object: stream it in chunks, validate every row, bulk-load the good rows once,
then file the object under `processed/`, or under `rejected/` with the reason beside it; the archived name
carries the version loaded (`processed/<name>@<etag>.csv`), so a corrected file never overwrites it.

Memory stays constant: the object is read in blocks of about `chunk_bytes` cut at record boundaries
(`blocks`). Each block is parsed (`parsing`) and checked with vectorised masks (`rows`); bad rows are
spooled beside the rejected copy (`bad_rows`), good rows go to the table through the bulk writer (`sink`),
so a (machine_id, timestamp) already stored or repeated within the file is counted as a duplicate, never
written twice, or as a conflict when its values differ (set aside beside the file, or replacing the stored
row: `conflict_policy`). The whole file is one transaction: a failure anywhere (PostgreSQL gone, a
malformed line at the end) commits nothing, and a retry loads it exactly once. The move comes after the
commit and only for the version read, so a newer upload under the same key is neither filed nor deleted.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import botocore.exceptions
import numpy as np
import pandas as pd
import psycopg
import sqlalchemy as sa
import urllib3.exceptions
from sqlalchemy.engine import Engine

from mfd.errors import MfdError, ServiceUnavailable
from mfd.ingestion.bad_rows import BadRows
from mfd.ingestion.blocks import UNCLOSED, CsvBlocks, check_header
from mfd.ingestion.conflict_rows import ConflictRows
from mfd.ingestion.headers import RepeatedHeaders
from mfd.ingestion.layouts import Layout, layout_for
from mfd.ingestion.parsing import Chunk, parse
from mfd.ingestion.rejection import FileRejected
from mfd.ingestion.rows import row_problems
from mfd.ingestion.sink import ChunkSink
from mfd.storage import readings as store
from mfd.storage.conflicts import DIFFER_POLICIES, Differ
from mfd.storage.objects import PROCESSED, REJECTED, ObjectChanged, ObjectMissing, Objects, archive_key
from mfd.storage.pause import pause_point
from mfd.validation import TimestampWindow

log = logging.getLogger(__name__)
CHUNK_BYTES = 8 << 20
PREVIEW_ROWS = 5
# A lost or refused database connection: the run fails, nothing from the file is committed.
DATABASE_DOWN = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)
# Failures of the database or of this program's own state, not of a file's bytes: they fail the run (the file
# stays in incoming/ for the next one) instead of rejecting the file.
NOT_THE_FILE = (
    MfdError,
    sa.exc.SQLAlchemyError,
    psycopg.Error,
    OSError,
    MemoryError,
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    urllib3.exceptions.HTTPError,
)


@dataclass
class IngestReport:
    """What happened to one file. Invariant: read == loaded + duplicate + conflicting + rejected."""

    key: str
    kind: str
    status: str = "processed"
    read: int = 0
    loaded: int = 0
    duplicate: int = 0
    conflicting: int = 0  # stored already with other values: set aside, or replaced (conflict_policy)
    rejected: int = 0
    seconds: float = 0.0
    version: str = ""  # the ETag of the object version read
    conflict_policy: str = "reject"
    filed_as: str = ""  # empty when a newer version replaced the object before it could be filed
    not_filed: str | None = None  # why it was not filed
    after_id: int = 0  # every row this file loaded has a larger id (read_loaded starts there)
    bad_rows_key: str | None = None
    conflicts_key: str | None = None
    reason: dict[str, Any] | None = None
    problems: Counter = field(default_factory=Counter)
    preview: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def rows_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0


def ingest_object(
    objects: Objects,
    engine: Engine,
    key: str,
    chunk_bytes: int = CHUNK_BYTES,
    window: TimestampWindow | None = None,
    conflict_policy: Differ = "reject",
    max_bytes: int | None = None,
) -> IngestReport:
    """Load the CSV object `key` into its table (see the module docstring) and file it away; readings
    outside `window` (the configured `Settings.timestamp_window()`; default the rule table's) are bad rows;
    a row stored already with other values is set aside or replaces it (`conflict_policy`, the configured
    `Settings.conflict_policy`). An object larger than `max_bytes` (`Settings.max_file_bytes`) is rejected
    (rule `file_too_large`) without a row of it read: filed under `rejected/` whole, its reason beside it.

    Raises ObjectMissing when the object is gone (nothing loaded), ObjectChanged when a local file changed
    while it was read (nothing committed, it stays in `incoming/` to be read again) and ServiceUnavailable
    when the database fails mid-load (nothing committed; the object stays in `incoming/` for a retry).
    """
    if conflict_policy not in DIFFER_POLICIES:
        raise MfdError(
            f"MFD_CONFLICT_POLICY must be one of {', '.join(DIFFER_POLICIES)}, got {conflict_policy!r}"
        )
    layout = layout_for(key).pinned(window)
    report = IngestReport(key=key, kind=layout.kind, conflict_policy=conflict_policy)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mfd-ingest-") as tmp:
        bad_rows = BadRows(Path(tmp) / "bad_rows.csv")
        conflicts = ConflictRows(Path(tmp) / "conflicts.csv")
        try:
            stream, report.version = objects.open_version(key)
        except ObjectMissing as exc:
            raise ObjectMissing(
                f"{key} was deleted before it could be read, nothing loaded: {exc} "
                f"(an ingested file is under {PROCESSED} or {REJECTED})"
            ) from exc
        with closing(stream):
            blocks = CsvBlocks(_Capped(stream, max_bytes) if max_bytes else stream, chunk_bytes)
            try:
                _refuse_oversized(declared_size(stream), max_bytes)
                _load(engine, layout, key, blocks, report, bad_rows, conflicts)
            except FileRejected as exc:
                _reject_whole(report, exc, blocks, bad_rows, conflicts)
            except DATABASE_DOWN as exc:
                cause = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__]
                raise ServiceUnavailable(
                    f"the readings database {store.describe(str(engine.url))} failed while loading {key} "
                    f"({cause[0]}); nothing from the file was committed "
                    "and it stays in incoming/: re-run once the database is back (check MFD_DATABASE_URL)"
                ) from exc
            except (*NOT_THE_FILE, ObjectMissing, ObjectChanged):
                raise
            except Exception as exc:  # noqa: BLE001 - whatever these bytes broke: this file's rejection, not the run's
                log.exception("ingesting %s failed", key)
                cause = FileRejected(
                    "unreadable_file", f"the file could not be read: {type(exc).__name__}: {exc}"
                )
                _reject_whole(report, cause, blocks, bad_rows, conflicts)
        _file_away(objects, key, report, bad_rows, conflicts)
    report.seconds = time.perf_counter() - started
    return report


def _reject_whole(
    report: IngestReport, exc: FileRejected, blocks: CsvBlocks, bad_rows: BadRows, conflicts: ConflictRows
) -> None:
    """Nothing from the file is stored (the transaction rolled back): every line counts as rejected; a file
    too large is not read further (no line counted)."""
    if exc.reason["rule"] != "no_valid_rows":
        bad_rows.discard()
    conflicts.discard()
    # To the end: a local file that changed meanwhile raises ObjectChanged.
    report.read = 0 if exc.reason["rule"] == TOO_LARGE else blocks.drain_lines()
    if exc.reason["rule"] == TOO_LARGE:
        report.problems.clear()
    report.loaded = report.duplicate = report.conflicting = 0
    report.rejected = report.read
    report.status, report.reason = "rejected", {"key": report.key, **exc.reason}


TOO_LARGE = "file_too_large"


def declared_size(stream: Any) -> int | None:
    """The size of the opened version as its store declared it, no byte read: a local file's (`fstat` of
    `LocalObjects`' checked read), S3's Content-Length (kept by botocore's StreamingBody); None if unknown."""
    fh = getattr(stream, "fh", None)
    if fh is not None and hasattr(fh, "fileno"):
        return os.fstat(fh.fileno()).st_size
    length = getattr(stream, "_content_length", None)
    return int(length) if length is not None else None


def _too_large(size: str, max_bytes: int) -> FileRejected:
    return FileRejected(
        TOO_LARGE,
        f"the file is {size} bytes, over the maximum of {max_bytes:,} bytes (MFD_MAX_FILE_BYTES): "
        "split it into smaller files, or raise the limit",
        examples=[{"max_bytes": max_bytes, "size": size}],
    )


def _refuse_oversized(size: int | None, max_bytes: int | None) -> None:
    """FileRejected(file_too_large) when the declared `size` is over `max_bytes`."""
    if max_bytes and size is not None and size > max_bytes:
        raise _too_large(f"{size:,}", max_bytes)


class _Capped:
    """A stream that refuses to give more than `max_bytes` (FileRejected: file_too_large): the guard for a
    store that declares no size, or an object that grew since."""

    def __init__(self, stream: Any, max_bytes: int) -> None:
        self.stream, self.max_bytes, self.read_bytes = stream, max_bytes, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.read_bytes += len(data)
        if self.read_bytes > self.max_bytes:
            raise _too_large(f"more than {self.max_bytes:,}", self.max_bytes)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def _load(
    engine: Engine,
    layout: Layout,
    key: str,
    blocks: CsvBlocks,
    report: IngestReport,
    bad_rows: BadRows,
    conflicts: ConflictRows,
) -> None:
    """Parse and validate block n+1 while block n is being written (PostgreSQL works in its own process);
    the transaction opens only once the first block with good rows is ready to write."""
    columns = check_header(blocks.header(), blocks.first_line(), layout)
    preview: list[pd.DataFrame] = []
    pending: Future[tuple[int, int, int]] | None = None

    def collect() -> None:
        if pending is not None:
            written, inserted, conflicting = pending.result()
            report.loaded += inserted
            report.conflicting += conflicting
            report.duplicate += written - inserted - conflicting

    ready = _checked(blocks, columns, layout, report, bad_rows)
    first = next(ready, None)
    if first is not None:
        with (
            engine.begin() as conn,
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="mfd-load") as writer,
        ):
            # Ids come from a sequence: whatever this transaction inserts lands above the largest id stored now.
            report.after_id = store.max_id(conn, layout.table)
            policy: Differ = report.conflict_policy  # type: ignore[assignment] - checked by ingest_object
            write = ChunkSink(conn, layout, columns, key, policy, conflicts.add).write
            pause_point("before_copy")
            # SQLite connections stay in the thread that made them.
            submit = writer.submit if conn.dialect.name == "postgresql" else _run_now
            for chunk, good in chain([first], ready):
                if not preview:
                    preview.append(chunk.typed(good).head(PREVIEW_ROWS))
                collect()
                pending = submit(write, chunk, good)
            collect()
            pause_point("before_commit")
    report.preview = preview[0] if preview else report.preview
    if report.read == 0:
        raise FileRejected("no_rows", "the file has a header but no data rows", list(columns))
    if report.loaded + report.duplicate + report.conflicting == 0:
        raise FileRejected(
            "no_valid_rows",
            f"all {report.read} rows failed validation",
            sorted({p.split(":")[0] for p in report.problems}),
            [{"problem": p, "rows": n} for p, n in report.problems.most_common(5)],
        )


def _checked(
    blocks: CsvBlocks, columns: list[str], layout: Layout, report: IngestReport, bad_rows: BadRows
) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Each block parsed and validated, its rows counted and its bad rows spooled: the chunks that have
    good rows, with their mask. A record the file ends inside (an unclosed quote) is one bad row; rows after
    a second header with another column order are bad rows (`headers`)."""
    headers = RepeatedHeaders(columns, layout)
    for block in blocks:
        if block.unclosed:
            report.read += 1
            report.rejected += 1
            bad_rows.add_record(block, columns, UNCLOSED, report.problems)
            continue
        block = headers.blank(block)
        if not block.data.strip():  # only header lines: no rows
            continue
        chunk = parse(block, columns, layout)
        problems = headers.set_aside(chunk, row_problems(chunk, layout))
        bad = np.zeros(len(chunk.frame), dtype=bool)
        for mask in problems.values():
            bad |= mask
        good = ~bad
        report.read += len(chunk.frame)
        if bad.any():
            report.rejected += int(bad.sum())
            bad_rows.add(chunk, bad, problems, report.problems)
        if good.any():
            yield chunk, good


def _run_now(fn: Callable[..., tuple[int, int, int]], *args: Any) -> Future[tuple[int, int, int]]:
    """`fn(*args)` in this thread, as a finished future."""
    done: Future[tuple[int, int, int]] = Future()
    try:
        done.set_result(fn(*args))
    except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
        done.set_exception(exc)
    return done


def _file_away(
    objects: Objects, key: str, report: IngestReport, bad_rows: BadRows, conflicts: ConflictRows
) -> None:
    """After the commit: bad rows, conflicts and the reason beside the file, then the move (never before),
    of the version read only: a newer upload under `key` is neither filed nor deleted (`not_filed`)."""
    beside = archive_key(key, REJECTED, report.version)
    if bad_rows.count:
        report.bad_rows_key = f"{beside}.bad_rows.csv"
        objects.upload(report.bad_rows_key, bad_rows.close())
    if conflicts.count:
        report.conflicts_key = f"{beside}.conflicts.csv"
        objects.upload(report.conflicts_key, conflicts.close())
    if report.status == "rejected":
        objects.put(f"{beside}.reason.json", json.dumps(report.reason, indent=2, default=str).encode())
    filed_as = beside if report.status == "rejected" else archive_key(key, PROCESSED, report.version)
    pause_point("before_move")
    try:
        objects.move(key, filed_as, etag=report.version)
    except ObjectChanged as exc:
        report.not_filed = f"{exc}; the new version stays in {key} for the next run"
        return
    report.filed_as = filed_as


def read_loaded(engine: Engine, key: str, limit: int | None = None, after_id: int = 0) -> pd.DataFrame:
    """Rows loaded from the object `key`, in load order (at most `limit`); `after_id` (the report's) lets the
    database start from the primary key instead of scanning the whole table."""
    table = layout_for(key).table
    query = sa.select(table).where(table.c.id > after_id, table.c.source == key).order_by(table.c.id)
    return store.read_frame(engine, query, limit)
