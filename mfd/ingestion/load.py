"""Ingest one incoming CSV object: stream it in chunks, validate every row, bulk-load the good rows once,
then file the object under `processed/`, or under `rejected/` with the reason beside it.

Memory stays constant: the object is read in blocks of about `chunk_bytes` cut at record boundaries.
Each block is parsed by pandas' C reader and checked with vectorised masks; on PostgreSQL the good rows'
original CSV lines go to `COPY ... FROM STDIN` (no re-encoding), into a staging table merged into the
target with `ON CONFLICT DO NOTHING`, so a (machine_id, timestamp) already stored or repeated within the
file is counted as a duplicate, never written twice. The whole file is one transaction: a failure
anywhere (PostgreSQL gone, a malformed line at the end) commits nothing, and a retry loads it exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import MfdError, ServiceUnavailable
from mfd.schema import (
    FAILURE_MODE_COLUMNS,
    LABEL_COLUMN,
    MACHINE_TYPES,
    PERIPHERAL_COLUMNS,
    PERIPHERAL_RANGES,
    REQUIRED_COLUMNS,
    SENSOR_RANGES,
    Range,
)
from mfd.storage import readings as store
from mfd.storage.objects import INCOMING, PROCESSED, REJECTED, ObjectMissing, Objects

CHUNK_BYTES = 8 << 20
PERIPHERAL_PREFIX = f"{INCOMING}peripheral/"
MACHINE_ID_MAX = 64
NA_TEXT = ("", "NA", "N/A", "NaN", "nan", "-nan", "NULL", "null", "None", "#N/A")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
PREVIEW_ROWS = 5
CATEGORICAL = ("machine_id", "machine_type")
# A lost or refused database connection: the run fails, nothing from the file is committed.
DATABASE_DOWN = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
)


@dataclass(frozen=True)
class Layout:
    """What one kind of incoming file must look like, and the table its rows go to."""

    kind: str
    table: sa.Table
    required: tuple[str, ...]
    optional: tuple[str, ...]
    ranges: Mapping[str, Range]
    categories: Mapping[str, tuple[str, ...]]
    flags: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)


READINGS = Layout(
    kind="readings",
    table=store.readings,
    required=REQUIRED_COLUMNS,
    optional=(LABEL_COLUMN, *FAILURE_MODE_COLUMNS),
    ranges=SENSOR_RANGES,
    categories={"machine_type": MACHINE_TYPES},
    flags=(LABEL_COLUMN, *FAILURE_MODE_COLUMNS),
)
PERIPHERAL = Layout(
    kind="peripheral",
    table=store.peripheral_readings,
    required=PERIPHERAL_COLUMNS,
    optional=(),
    ranges=PERIPHERAL_RANGES,
    categories={},
    flags=(),
)


def layout_for(key: str) -> Layout:
    """Peripheral-device files live under `incoming/peripheral/`; every other file holds readings."""
    return PERIPHERAL if key.startswith(PERIPHERAL_PREFIX) else READINGS


def filed_key(key: str, folder: str) -> str:
    """Where `incoming/<name>` goes: `processed/<name>` or `rejected/<name>`."""
    name = key[len(INCOMING) :] if key.startswith(INCOMING) else key
    return f"{folder}{name}"


class FileRejected(MfdError):
    """The whole file is unusable; `reason` says which rule failed, on which columns, with examples."""

    def __init__(self, rule: str, message: str, columns: list[str] | None = None, examples: Any = None):
        super().__init__(f"{rule}: {message}")
        self.reason: dict[str, Any] = {
            "rule": rule,
            "message": message,
            "columns": columns or [],
            "examples": examples if examples is not None else [],
        }


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
        bad_rows = _BadRows(Path(tmp) / "bad_rows.csv")
        try:
            stream = objects.open(key)
        except ObjectMissing as exc:
            raise ObjectMissing(
                f"{key} was deleted before it could be read, nothing loaded: {exc} "
                f"(an ingested file is under {PROCESSED} or {REJECTED})"
            ) from exc
        with closing(stream):
            blocks = _CsvBlocks(stream, chunk_bytes)
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
    engine: Engine, layout: Layout, key: str, blocks: _CsvBlocks, report: IngestReport, bad_rows: _BadRows
) -> None:
    """Parse and validate block n+1 while block n is being written (PostgreSQL works in its own process)."""
    columns = _check_header(blocks.header(), blocks.first_line(), layout)
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
        if conn.dialect.name == "postgresql":
            write, submit = _PostgresSink(conn, layout, columns, key).write, writer.submit
        else:  # SQLite connections stay in the thread that made them
            write, submit = partial(_sqlite_write, conn, layout, key), _run_now
        for block in blocks:
            chunk = _parse(block, columns, layout)
            problems = _row_problems(chunk, layout)
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


def _file_away(objects: Objects, key: str, report: IngestReport, bad_rows: _BadRows) -> None:
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


class _CsvBlocks:
    """The object as a header line and blocks of whole CSV records (never cut inside a quoted field)."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self.stream, self.size = stream, size
        self.pending = b""
        self.lines = 0
        self.eof = False
        self._header: bytes | None = None

    def _fill(self) -> bool:
        data = self.stream.read(self.size)
        if not data:
            self.eof = True
            return False
        self.pending += data
        return True

    def header(self) -> bytes:
        """The first line (BOM and line end stripped); b"" for a zero-byte object."""
        if self._header is None:
            while b"\n" not in self.pending and self._fill():
                pass
            line, _, self.pending = self.pending.partition(b"\n")
            self._header = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
            if not self._header and not self.pending and self.eof:
                raise FileRejected("empty_file", "the object is zero bytes: not even a header")
        return self._header

    def first_line(self) -> bytes:
        """The first data line, for examples in a rejection (not consumed)."""
        while b"\n" not in self.pending and not self.eof and self._fill():
            pass
        return self.pending.partition(b"\n")[0].rstrip(b"\r")

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if not self.eof:
                self._fill()
            cut = _record_end(self.pending) if not self.eof else len(self.pending)
            if cut <= 0:
                if self.eof:
                    return
                continue
            block, self.pending = self.pending[:cut], self.pending[cut:]
            self.lines += block.count(b"\n") + (not block.endswith(b"\n"))
            if block.strip():  # trailing blank lines carry no records
                yield block

    def drain_lines(self) -> int:
        """Read the rest, counting lines: how many data lines the whole file has."""
        if self._header is None:
            return 0
        while not self.eof:
            self._fill()
            cut = self.pending.rfind(b"\n") + 1
            self.lines += self.pending.count(b"\n", 0, cut)
            self.pending = self.pending[cut:]
        if self.pending.strip():
            self.lines += self.pending.count(b"\n") + (not self.pending.endswith(b"\n"))
        self.pending = b""
        return self.lines


def _record_end(buf: bytes) -> int:
    """Length of the longest prefix of whole records: up to a newline outside any quoted field."""
    cut = buf.rfind(b"\n")
    while cut >= 0 and buf.count(b'"', 0, cut) % 2:
        cut = buf.rfind(b"\n", 0, cut)
    return cut + 1


def _check_header(header: bytes, first_line: bytes, layout: Layout) -> list[str]:
    """The file's columns, or FileRejected naming the rule (delimiter, missing/extra/duplicate columns)."""
    try:
        names = [c.strip() for c in next(csv.reader([header.decode("utf-8")]), [])]
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding", f"the header is not UTF-8 ({exc})") from exc
    except csv.Error as exc:
        raise FileRejected("malformed_csv", f"the header line is not valid CSV ({exc})") from exc
    data = first_line.decode("utf-8", errors="replace")
    examples = dict(zip(names, next(csv.reader([data]), []), strict=False)) if data else {}
    expected = f"expected a comma-separated header with {', '.join(layout.required)}"
    if len(names) == 1:
        for delimiter in (";", "\t", "|"):
            split = names[0].split(delimiter)
            if len(split) > 1:
                raise FileRejected(
                    "wrong_delimiter",
                    f"columns are separated by {delimiter!r}, not ','; {expected}",
                    [c.strip() for c in split],
                    [data],
                )
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise FileRejected("duplicate_columns", f"columns appear twice; {expected}", duplicated, examples)
    missing = [c for c in layout.required if c not in names]
    if missing:
        raise FileRejected("missing_columns", f"required columns are missing; {expected}", missing, examples)
    extra = [c for c in names if c not in layout.columns]
    if extra:
        raise FileRejected(
            "unexpected_columns",
            f"columns not in the schema (allowed: {', '.join(layout.columns)})",
            extra,
            {c: examples.get(c) for c in extra},
        )
    return names


@dataclass
class _Chunk:
    """One parsed block: numeric columns as float64, text as object; the raw lines when they align."""

    frame: pd.DataFrame
    timestamps: pd.Series
    unparsable: dict[str, np.ndarray]
    text: pd.DataFrame | None
    aligned: bool
    block: bytes
    flags: tuple[str, ...]

    @cached_property
    def lines(self) -> list[bytes] | None:
        """The block's lines, one per row, or None when rows and lines do not align."""
        return self.block.removesuffix(b"\n").split(b"\n") if self.aligned else None

    def raw(self, good: np.ndarray) -> bytes | None:
        """The good rows' original CSV lines, or None when lines and rows do not align one to one."""
        if self.lines is None:
            return None
        if good.all():
            return self.block
        return b"\n".join([line for line, ok in zip(self.lines, good, strict=True) if ok]) + b"\n"

    def typed(self, good: np.ndarray) -> pd.DataFrame:
        out = self.frame.loc[good].copy()
        for flag in self.flags:
            out[flag] = out[flag].astype("Int8")
        out["timestamp"] = self.timestamps.loc[good]
        return out

    def original(self, rows: np.ndarray) -> pd.DataFrame:
        """The rows as written in the file (text), for the bad-rows file."""
        if self.text is not None:
            return self.text.loc[rows]
        if self.lines is not None:
            lines = b"\n".join(line for line, bad in zip(self.lines, rows, strict=True) if bad)
            return _read(lines, list(self.frame.columns), dict.fromkeys(self.frame.columns, object), ())
        return self.frame.loc[rows]


def _read(data: bytes, columns: list[str], dtypes: dict[str, Any], numeric: tuple[str, ...]) -> pd.DataFrame:
    """pandas' C reader; a structural CSV error rejects the file, a value that does not convert to its
    dtype raises ValueError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                io.BytesIO(data),
                header=None,
                names=columns,
                dtype=dtypes,
                index_col=False,
                keep_default_na=False,
                na_values={c: list(NA_TEXT) if c in numeric else [""] for c in columns},
                encoding="utf-8",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise FileRejected(
            "malformed_csv", f"not valid CSV ({str(exc).strip()})", columns, [_first_lines(data)]
        ) from exc
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding", f"the file is not UTF-8 text ({exc})", columns) from exc


def _parse(block: bytes, columns: list[str], layout: Layout) -> _Chunk:
    numeric = tuple(c for c in columns if c in layout.ranges or c in layout.flags)
    text = None
    unparsable: dict[str, np.ndarray] = {}
    frame = _read_clean(block, columns, numeric)
    if frame is not None:
        timestamps = frame["timestamp"]
    else:
        # Numbers and 0/1 flags as float64, repeated labels as categories: few Python objects per row.
        fast = {c: "float64" if c in numeric else "category" if c in CATEGORICAL else object for c in columns}
        try:
            frame = _read(block, columns, fast, numeric)
        except ValueError:  # text in a numeric column: parse as text, mark what does not convert
            text = _read(block, columns, dict.fromkeys(columns, object), numeric)
            frame = text.copy()
            for c in numeric:
                frame[c] = pd.to_numeric(text[c], errors="coerce")
                unparsable[c] = (frame[c].isna() & text[c].notna()).to_numpy()
        timestamps = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True, errors="coerce")
    # Rows map one to one onto lines unless quotes, blank lines or bare CRs are involved.
    aligned = (
        b'"' not in block
        and b"\n\n" not in block
        and b"\n\r\n" not in block
        and not block.startswith((b"\n", b"\r"))
        and block.count(b"\r") == block.count(b"\r\n")
        and block.count(b"\n") + (not block.endswith(b"\n")) == len(frame)
    )
    return _Chunk(
        frame, timestamps, unparsable, text, aligned, block, tuple(c for c in layout.flags if c in columns)
    )


def _read_clean(block: bytes, columns: list[str], numeric: tuple[str, ...]) -> pd.DataFrame | None:
    """Arrow's CSV reader, on this thread (the other core is PostgreSQL's), for the common case: no quoting,
    every number parses and every timestamp carries its UTC offset. None for anything else (text in a
    number, a zoneless or odd timestamp, a quote, a structural error), which then goes through pandas and
    the full diagnosis."""
    if b'"' in block:
        return None
    types = {c: pa.float64() if c in numeric else pa.dictionary(pa.int32(), pa.string()) for c in columns}
    types["timestamp"] = pa.timestamp("us", tz="UTC")
    try:
        table = pa_csv.read_csv(
            io.BytesIO(block),
            read_options=pa_csv.ReadOptions(column_names=columns, use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return table.to_pandas()


def _first_lines(block: bytes, count: int = 3) -> str:
    return b"\n".join(block.split(b"\n", count)[:count]).decode("utf-8", errors="replace")


def _row_problems(chunk: _Chunk, layout: Layout) -> dict[str, np.ndarray]:
    """One boolean mask per problem (`column: what is wrong`); a row is bad when any mask is set."""
    frame = chunk.frame
    problems: dict[str, np.ndarray] = {}

    def add(label: str, mask: np.ndarray) -> None:
        if mask.any():
            problems[label] = mask

    for column in layout.required:
        if column not in layout.ranges:
            add(f"{column}: missing", frame[column].isna().to_numpy())
    if frame["machine_id"].notna().any():
        add(
            f"machine_id: longer than {MACHINE_ID_MAX} characters",
            (frame["machine_id"].str.len() > MACHINE_ID_MAX).fillna(False).to_numpy(dtype=bool),
        )
    add(
        "timestamp: not an ISO 8601 timestamp",
        (chunk.timestamps.isna() & frame["timestamp"].notna()).to_numpy(),
    )
    for column, allowed in layout.categories.items():
        add(
            f"{column}: not one of {', '.join(allowed)}",
            (~frame[column].isin(allowed) & frame[column].notna()).to_numpy(),
        )
    for column, bounds in layout.ranges.items():
        values = frame[column].to_numpy(dtype=np.float64)
        broken = chunk.unparsable.get(column)
        if broken is not None:
            add(f"{column}: not a number", broken)
        missing = np.isnan(values) if broken is None else np.isnan(values) & ~broken
        add(f"{column}: missing or NaN", missing)
        with np.errstate(invalid="ignore"):
            add(
                f"{column}: outside [{bounds.low:g}, {bounds.high:g}] {bounds.unit}",
                (values < bounds.low) | (values > bounds.high),
            )
    for column in layout.flags:
        if column in frame.columns:
            values = frame[column].to_numpy(dtype=np.float64)
            broken = chunk.unparsable.get(column, False)
            add(f"{column}: not 0 or 1", (~np.isin(values, (0.0, 1.0)) & ~np.isnan(values)) | broken)
    return problems


class _BadRows:
    """Rows that failed validation, as written in the file plus a `reason` column, spooled to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def add(self, chunk: _Chunk, bad: np.ndarray, problems: dict[str, np.ndarray], tally: Counter) -> None:
        rows = chunk.original(bad).copy()
        reasons = pd.Series("", index=np.flatnonzero(bad), dtype=object)
        for label, mask in problems.items():
            hit = mask[bad]
            tally[label] += int(hit.sum())
            reasons[hit] = reasons[hit] + "; " + label
        rows["reason"] = reasons.str.removeprefix("; ").to_numpy()
        if self._fh is None:
            self._fh = self.path.open("w", newline="")
            rows.to_csv(self._fh, index=False)
        else:
            rows.to_csv(self._fh, index=False, header=False)
        self.count += len(rows)

    def discard(self) -> None:
        """Drop what was collected: the whole file is rejected, so the rows are all in it anyway."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.count = 0

    def close(self) -> Path:
        if self._fh is not None:
            self._fh.close()
        return self.path


class _PostgresSink:
    """Bulk load into PostgreSQL inside the caller's transaction, each chunk under a savepoint.

    Fast path: COPY the rows straight into the table. When a key is already stored or repeats within the
    chunk, the unique key stops that COPY; the chunk, and every later chunk of the file, then goes through
    a temporary staging table merged with INSERT ... ON CONFLICT DO NOTHING, which skips those keys.
    """

    def __init__(self, conn: sa.Connection, layout: Layout, columns: list[str], source: str) -> None:
        self.table, self.source = layout.table.name, source
        self.raw_conn = conn.connection.driver_connection
        self.staging = f"mfd_staging_{layout.kind}"
        self.file_columns = ", ".join(f'"{c}"' for c in columns)
        self.table_columns = ", ".join(
            f'"{c.name}"' for c in layout.table.columns if c.name not in ("id", "source")
        )
        self.source_field = _csv_field(source)
        self.staged = False
        self.direct = True
        with self.raw_conn.cursor() as cur:
            cur.execute("SET LOCAL TIME ZONE 'UTC'")

    def write(self, chunk: _Chunk, good: np.ndarray) -> tuple[int, int]:
        """Load the good rows of `chunk`: (rows written, rows inserted); the difference were duplicates."""
        written = int(good.sum())
        with self.raw_conn.cursor() as cur:
            if self.direct:
                cur.execute("SAVEPOINT mfd_direct")
                try:
                    inserted = self._copy(cur, self.table, chunk, good, with_source=True)
                    cur.execute("RELEASE SAVEPOINT mfd_direct")
                    return written, inserted
                except psycopg.errors.UniqueViolation:  # a key stored before, or twice in this file
                    cur.execute("ROLLBACK TO SAVEPOINT mfd_direct")
                    self.direct = False
            return written, self._merge(cur, chunk, good)

    def _merge(self, cur: Any, chunk: _Chunk, good: np.ndarray) -> int:
        if not self.staged:
            cur.execute(
                f"CREATE TEMP TABLE {self.staging} ON COMMIT DROP AS "
                f"SELECT {self.table_columns} FROM {self.table} WITH NO DATA"
            )
            self.staged = True
        self._copy(cur, self.staging, chunk, good, with_source=False)
        cur.execute(
            f"INSERT INTO {self.table} ({self.table_columns}, source) "
            f"SELECT {self.table_columns}, %s FROM {self.staging} "
            "ON CONFLICT (machine_id, timestamp) DO NOTHING",
            (self.source,),
        )
        inserted = cur.rowcount
        cur.execute(f"TRUNCATE {self.staging}")
        return inserted

    def _copy(self, cur: Any, table: str, chunk: _Chunk, good: np.ndarray, with_source: bool) -> int:
        """COPY the good rows as written in the file; text PostgreSQL reads differently from pandas
        (a rare timestamp spelling) is sent again normalised. Returns the rows copied."""
        columns = f"{self.file_columns}, source" if with_source else self.file_columns
        statement = f"COPY {table} ({columns}) FROM STDIN WITH (FORMAT csv)"
        raw = chunk.raw(good)
        if raw is not None:
            cur.execute("SAVEPOINT mfd_copy")
            try:
                with cur.copy(statement) as copy:
                    copy.write(_append_field(raw, self.source_field) if with_source else raw)
                copied = cur.rowcount
                cur.execute("RELEASE SAVEPOINT mfd_copy")
                return copied
            except psycopg.errors.DataError:
                cur.execute("ROLLBACK TO SAVEPOINT mfd_copy")
        rows = chunk.typed(good)
        rows["timestamp"] = rows["timestamp"].dt.strftime(TIMESTAMP_FORMAT + "+00")
        if with_source:
            rows["source"] = self.source
        try:
            with cur.copy(statement) as copy:
                copy.write(rows.to_csv(index=False, header=False).encode())
        except psycopg.errors.DataError as exc:
            raise FileRejected(
                "database_rejected_value", str(exc).strip(), list(chunk.frame.columns)
            ) from exc
        return cur.rowcount


def _csv_field(text: str) -> bytes:
    """`text` as one CSV field, quoted when it needs to be."""
    if any(ch in text for ch in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.encode()


def _append_field(lines: bytes, field_text: bytes) -> bytes:
    """Every CSV line of `lines` with one more field at its end (CRLF or LF line ends)."""
    end = b"\r\n" if b"\r\n" in lines else b"\n"
    out = lines.replace(end, b"," + field_text + end)
    return out if out.endswith(end) else out + b"," + field_text


def _typed_rows(chunk: _Chunk, good: np.ndarray, layout: Layout, source: str) -> pd.DataFrame:
    """Good rows in the table's column order, timestamps as text the way mfd.storage.readings writes them."""
    rows = chunk.typed(good)
    out = pd.DataFrame(index=rows.index)
    for column in layout.table.columns:
        if column.name == "id":
            continue
        if column.name == "source":
            out["source"] = source
        elif column.name in rows.columns:
            out[column.name] = rows[column.name]
        else:
            out[column.name] = None
    out["timestamp"] = rows["timestamp"].dt.strftime(TIMESTAMP_FORMAT)
    for flag in layout.flags:
        out[flag] = pd.to_numeric(out[flag]).astype("Int8")
    return out.astype(object).where(out.notna(), None)


def _sqlite_write(
    conn: sa.Connection, layout: Layout, source: str, chunk: _Chunk, good: np.ndarray
) -> tuple[int, int]:
    """The embedded twin: executemany INSERT OR IGNORE; (rows written, rows inserted)."""
    rows = _typed_rows(chunk, good, layout, source)
    driver = conn.connection.driver_connection
    columns = ", ".join(f'"{c}"' for c in rows.columns)
    marks = ", ".join("?" for _ in rows.columns)
    before = driver.total_changes
    driver.cursor().executemany(
        f"INSERT OR IGNORE INTO {layout.table.name} ({columns}) VALUES ({marks})",
        rows.itertuples(index=False, name=None),
    )
    return len(rows), driver.total_changes - before


def read_loaded(engine: Engine, key: str, limit: int | None = None, after_id: int = 0) -> pd.DataFrame:
    """Rows loaded from the object `key`, in load order (at most `limit`); `after_id` (the report's) lets the
    database start from the primary key instead of scanning the whole table."""
    table = layout_for(key).table
    query = sa.select(table).where(table.c.id > after_id, table.c.source == key).order_by(table.c.id)
    return store.read_frame(engine, query, limit)
