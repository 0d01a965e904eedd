"""The one bulk writer: rows upserted into a table inside the caller's transaction.

PostgreSQL: optimistically one `COPY` straight into the table under a savepoint; when a key is stored
already (or repeats) the unique key stops that COPY, the savepoint is rolled back and this write and every
later one go through a temporary staging table merged with `INSERT ... ON CONFLICT`. A frame of numbers
only (ids, probabilities, labels: detection's hot path) with constants is sent as COPY BINARY packed by
numpy, which the server parses in about two thirds of the CSV's time; anything else as CSV. SQLite, the embedded
twin: `executemany` of the same `INSERT ... ON CONFLICT`. A conflicting row is skipped (`update` empty)
or has its `update` columns overwritten. `constants` are columns with one value for every row (the file a
row came from, the model that scored it), sent once instead of per row.

With a `differ` policy (readings), a skipped row whose stored twin has other values is a *conflict*, not a
duplicate: only on the merge path, and only when a write inserted fewer rows than it was given, the staged
rows are joined to the table on the key (`mfd.storage.conflicts`); a clean load never pays for it.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa

from mfd.storage.conflicts import Conflicts, Differ
from mfd.storage.pause import pause_point

TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # COPY BINARY timestamps: microseconds since then
_BINARY_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_BINARY_TRAILER = struct.pack(">h", -1)


class BulkWriter:
    """Upsert rows of `columns` (plus `constants`) into `table` on `conn`'s transaction.

    `conflict` is the unique key an existing row is found by; `update` the columns a conflicting row gets
    from the new one (empty: the new row is skipped). `direct` turns False once a COPY met a stored key.
    `differ` (with `update` empty): what a skipped row with other values than the stored one becomes
    (`mfd.storage.conflicts`; `on_conflicts` gets the rejected ones); `conflicts.count` says how many.
    """

    def __init__(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        conflict: Sequence[str],
        update: Sequence[str] = (),
        constants: Mapping[str, Any] | None = None,
        differ: Differ | None = None,
        on_conflicts: Callable[[pd.DataFrame], None] | None = None,
    ) -> None:
        self.conn, self.table = conn, table
        self.columns = tuple(columns)
        self.constants = dict(constants or {})
        self.postgres = conn.dialect.name == "postgresql"
        self.direct = self.postgres
        target = ", ".join(_quote(c) for c in (*self.columns, *self.constants))
        if update:
            action = "DO UPDATE SET " + ", ".join(f"{_quote(c)} = EXCLUDED.{_quote(c)}" for c in update)
        else:
            action = "DO NOTHING"
        self._on_conflict = f"ON CONFLICT ({', '.join(_quote(c) for c in conflict)}) {action}"
        self._into = f"{table.name} ({target})"
        self._staging: str | None = None
        self.conflicts = (
            Conflicts(conn, table, self.columns, conflict, self.constants, differ, on_conflicts)
            if differ
            else None
        )
        if self.postgres:
            self._raw = conn.connection.driver_connection
            suffix = b"," + b",".join(_csv_field(v) for v in self.constants.values())
            self._suffix = suffix if self.constants else b""
            self._formats = [_binary_format(table.c[c].type) for c in self.columns]
            self._binary_constants = _binary_constants(table, self.constants)

    def write_frame(self, rows: pd.DataFrame) -> int:
        """Upsert `rows` (its `columns`): the rows inserted or updated."""
        if not self.postgres:
            return self._executemany(rows)
        values = [rows[c].to_numpy() for c in self.columns]
        if self._binary_constants is not None and all(map(_fits, values, self._formats)):
            constants = self._binary_constants
            return self._write(
                "binary", lambda direct: _binary_payload(values, self._formats, constants if direct else [])
            )
        return self.write_csv(_csv_bytes(rows[list(self.columns)]))

    def write_csv(self, data: bytes) -> int:
        """PostgreSQL: upsert CSV lines holding `columns` in order: the rows inserted or updated.

        A psycopg error (a value the column refuses) rolls this write back and is raised; the transaction
        stays usable."""
        suffix = self._suffix
        return self._write("csv", lambda direct: _append_suffix(data, suffix) if direct and suffix else data)

    def _write(self, fmt: str, payload: Callable[[bool], bytes]) -> int:
        """COPY `payload(direct)` (the rows with the constants when `direct`, else without) in `fmt`."""
        with self._raw.cursor() as cur:
            if self.direct:
                try:
                    return self._in_savepoint(cur, self._copy_direct, fmt, payload(True))
                except psycopg.errors.UniqueViolation:  # a key stored before, or twice in the data
                    self.direct = False
            if self._staging is None:
                self._staging = self._create_staging(cur)
            return self._in_savepoint(cur, self._merge, fmt, payload(False))

    def _in_savepoint(self, cur: psycopg.Cursor, step: Any, fmt: str, data: bytes) -> int:
        cur.execute("SAVEPOINT mfd_bulk")
        try:
            written = step(cur, fmt, data)
        except psycopg.Error:
            cur.execute("ROLLBACK TO SAVEPOINT mfd_bulk")
            raise
        cur.execute("RELEASE SAVEPOINT mfd_bulk")
        return written

    def _copy_direct(self, cur: psycopg.Cursor, fmt: str, data: bytes) -> int:
        with cur.copy(f"COPY {self._into} FROM STDIN WITH (FORMAT {fmt})") as copy:
            copy.write(data)
            pause_point("copy")  # the rows are sent, the COPY is not finished
        return cur.rowcount

    def _staging_name(self) -> str:
        columns = ", ".join(_quote(c) for c in self.columns)
        return f"mfd_staging_{self.table.name}_{zlib.crc32(columns.encode()):08x}"

    def _create_staging(self, cur: psycopg.Cursor) -> str:
        # One staging table per column set; dropped with the transaction. `mfd_row` keeps the file order.
        columns = ", ".join(_quote(c) for c in self.columns)
        name = self._staging_name()
        cur.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {name} ON COMMIT DROP AS "
            f"SELECT {columns} FROM {self.table.name} WITH NO DATA"
        )
        if self.conflicts is not None:
            cur.execute(f"ALTER TABLE {name} ADD COLUMN IF NOT EXISTS mfd_row bigserial")
        return name

    def _merge(self, cur: psycopg.Cursor, fmt: str, data: bytes) -> int:
        columns = ", ".join(_quote(c) for c in self.columns)
        with cur.copy(f"COPY {self._staging} ({columns}) FROM STDIN WITH (FORMAT {fmt})") as copy:
            copy.write(data)
        staged = cur.rowcount
        values = "".join(", %s" for _ in self.constants)
        cur.execute(
            f"INSERT INTO {self._into} SELECT {columns}{values} FROM {self._staging} {self._on_conflict}",
            tuple(self.constants.values()),
        )
        written = cur.rowcount
        if self.conflicts is not None and written < staged:  # some keys collided: which values differ?
            self.conflicts.settle(self._staging)
        cur.execute(f"TRUNCATE {self._staging}")
        return written

    def _executemany(self, rows: pd.DataFrame) -> int:
        """SQLite: one executemany; timestamps stored as text the way SQLAlchemy writes them."""
        values = rows[list(self.columns)].assign(**self.constants)
        for column in values.columns:
            if isinstance(values[column].dtype, pd.DatetimeTZDtype) or values[column].dtype.kind == "M":
                values[column] = values[column].dt.strftime(TIMESTAMP_FORMAT)
        values = values.astype(object).where(values.notna(), None)
        marks = ", ".join("?" for _ in values.columns)
        driver = self.conn.connection.driver_connection
        before = driver.total_changes
        driver.cursor().executemany(
            f"INSERT INTO {self._into} VALUES ({marks}) {self._on_conflict}",
            values.itertuples(index=False, name=None),
        )
        written = driver.total_changes - before
        if self.conflicts is not None and written < len(values):  # some keys collided: stage and compare
            staging = self._staging_name()
            columns = ", ".join(_quote(c) for c in self.columns)
            driver.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {staging} (mfd_row INTEGER PRIMARY KEY, {columns})"
            )
            driver.cursor().executemany(
                f"INSERT INTO {staging} ({columns}) VALUES ({', '.join('?' for _ in self.columns)})",
                values[list(self.columns)].itertuples(index=False, name=None),
            )
            self.conflicts.settle(staging)
            driver.execute(f"DELETE FROM {staging}")
        return written


def _csv_bytes(rows: pd.DataFrame) -> bytes:
    """`rows` as CSV lines for COPY, written by Arrow (several times faster than pandas' writer); numbers
    round-trip, timestamps are cut to microseconds, NA is an empty field (NULL)."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    for i, column in enumerate(table.schema):
        if pa.types.is_timestamp(column.type):
            micro = pa.timestamp("us", tz=column.type.tz)
            table = table.set_column(i, column.name, table.column(i).cast(micro, safe=False))
    out = io.BytesIO()
    pa_csv.write_csv(table, out, pa_csv.WriteOptions(include_header=False, quoting_style="needed"))
    return out.getvalue()


def _binary_format(column_type: sa.types.TypeEngine) -> str | None:
    """The numpy format of a number column in COPY BINARY (big-endian), None for any other type."""
    for kind, fmt in ((sa.SmallInteger, ">i2"), (sa.BigInteger, ">i8"), (sa.Integer, ">i4")):
        if isinstance(column_type, kind):
            return fmt
    if isinstance(column_type, sa.Float) and not column_type.asdecimal and column_type.precision is None:
        return ">f8"  # FLOAT / DOUBLE PRECISION
    return None


def _fits(values: np.ndarray, fmt: str | None) -> bool:
    """Whether COPY BINARY carries `values` in a column of format `fmt` exactly (numbers, no NA, in range)."""
    kind = values.dtype.kind
    if fmt is None or kind not in "iubf":
        return False
    if "f" in fmt:
        return kind != "f" or not np.isnan(values).any()
    if kind == "f":
        return False
    limits = np.iinfo(np.dtype(fmt))
    return not len(values) or (limits.min <= values.min() and values.max() <= limits.max)


def _binary_field(column_type: sa.types.TypeEngine, value: Any) -> bytes | None:
    """`value` as one COPY BINARY field (length word, then the data), None when it has no binary form here."""
    if value is None:
        return struct.pack(">i", -1)
    if isinstance(value, datetime):
        if not (isinstance(column_type, sa.DateTime) and column_type.timezone and value.tzinfo):
            return None
        return struct.pack(">iq", 8, (value - _PG_EPOCH) // timedelta(microseconds=1))
    if isinstance(value, str) and isinstance(column_type, sa.String):
        data = value.encode()
        return struct.pack(">i", len(data)) + data
    fmt = _binary_format(column_type)
    if fmt is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    array = np.asarray([value])
    return (
        struct.pack(">i", np.dtype(fmt).itemsize) + array.astype(fmt).tobytes() if _fits(array, fmt) else None
    )


def _binary_constants(table: sa.Table, constants: Mapping[str, Any]) -> list[bytes] | None:
    """Each constant as a COPY BINARY field, None when one has no binary form (the CSV path then)."""
    fields = [_binary_field(table.c[name].type, value) for name, value in constants.items()]
    return None if any(f is None for f in fields) else fields  # type: ignore[return-value]


def _binary_payload(values: list[np.ndarray], formats: list[str], constants: list[bytes]) -> bytes:
    """A COPY BINARY stream of rows: the `values` columns in `formats`, then the `constants` fields."""
    layout = [("count", ">i2")]
    for i, fmt in enumerate(formats):
        layout += [(f"length{i}", ">i4"), (f"value{i}", fmt)]
    layout += [(f"constant{i}", f"S{len(c)}") for i, c in enumerate(constants)]
    rows = np.empty(len(values[0]) if values else 0, dtype=np.dtype(layout))
    rows["count"] = len(formats) + len(constants)
    for i, (column, fmt) in enumerate(zip(values, formats, strict=True)):
        rows[f"length{i}"] = np.dtype(fmt).itemsize
        rows[f"value{i}"] = column
    for i, constant in enumerate(constants):
        rows[f"constant{i}"] = constant
    return _BINARY_HEADER + rows.tobytes() + _BINARY_TRAILER


def _quote(column: str) -> str:
    return f'"{column}"'


def _csv_field(value: Any) -> bytes:
    """`value` as one CSV field, quoted when it needs to be (None: empty, i.e. NULL)."""
    if value is None:
        return b""
    text = value.isoformat() if isinstance(value, datetime) else str(value)
    if any(ch in text for ch in ',"\r\n'):
        text = '"' + text.replace('"', '""') + '"'
    return text.encode()


def _append_suffix(lines: bytes, suffix: bytes) -> bytes:
    """Every CSV record of `lines` with `suffix` (more fields) at its end (CRLF or LF line ends). A line
    break inside a quoted value is not a record end: quotes are counted (standard CSV pairs them inside a
    quoted field), in one pass."""
    if b'"' not in lines:
        end = b"\r\n" if b"\r\n" in lines else b"\n"
        out = lines.replace(end, suffix + end)
        return out if out.endswith(end) else out + suffix
    out, quotes = [], 0
    pieces = lines.split(b"\n")
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        if last and not piece:
            break
        quotes += piece.count(b'"')
        if quotes % 2 == 0:  # the record ends here
            body, cr = (piece[:-1], b"\r") if piece.endswith(b"\r") else (piece, b"")
            out.append(body + suffix + cr)
            quotes = 0
        else:
            out.append(piece)
        if not last:
            out.append(b"\n")
    return b"".join(out)
