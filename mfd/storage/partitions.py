"""The readings store partitioned by month (PostgreSQL declarative partitioning), opt-in beside the live
`readings` table: `readings_by_month` has `readings`' columns, one partition per calendar month of
`timestamp` (`readings_by_month_2026_01`, ...), the primary key (id, timestamp) and the same unique
(timestamp, machine_id) key. A query bounded in time (the training set's window, a replay) reads only its
months; detection's cursor (`id > n`) probes each attached month's index once, so old months are archived
to Parquet and detached (`mfd.storage.archive`). docs/operating.md "Readings retention" says what remains
before the live table itself is partitioned."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.storage.readings import ensure_tables

PARTITIONED = "readings_by_month"
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")


def month_bounds(month: str) -> tuple[datetime, datetime]:
    """`YYYY-MM` -> [first instant, first instant of the next month) in UTC; MfdError when malformed."""
    match = _MONTH.match(month)
    if not match or not 1 <= int(match[2]) <= 12:
        raise MfdError(f"a month is YYYY-MM, e.g. 2026-01; got {month!r}")
    year, mon = int(match[1]), int(match[2])
    start = datetime(year, mon, 1, tzinfo=UTC)
    return start, datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)


def month_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m")


def partition_name(table: str, month: str) -> str:
    month_bounds(month)
    return f"{table}_{month.replace('-', '_')}"


def _checked(table: str) -> str:
    if not _NAME.match(table):
        raise MfdError(f"not a table name this module creates: {table!r}")
    return table


def _require_postgres(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        raise MfdError("monthly partitions need PostgreSQL (MFD_DATABASE_URL); the SQLite twin has none")


def create_partitioned(engine: Engine, table: str = PARTITIONED) -> None:
    """Create `table` (if missing) partitioned by month of `timestamp`, with `readings`' columns, defaults
    (ids from `readings`' sequence) and keys."""
    _require_postgres(engine)
    ensure_tables(engine)
    t = _checked(table)
    with engine.begin() as conn:
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": t}).scalar() is not None:
            return
        conn.execute(
            sa.text(f'CREATE TABLE {t} (LIKE readings INCLUDING DEFAULTS) PARTITION BY RANGE ("timestamp")')
        )
        conn.execute(sa.text(f'ALTER TABLE {t} ADD PRIMARY KEY (id, "timestamp")'))
        conn.execute(
            sa.text(f'ALTER TABLE {t} ADD CONSTRAINT {t}_time_machine_key UNIQUE ("timestamp", machine_id)')
        )


def ensure_month(conn: sa.Connection, table: str, month: str) -> str:
    """Create the partition of `month` if missing; its name."""
    start, end = month_bounds(month)
    name = partition_name(_checked(table), month)
    # DDL takes no bind parameters: the bounds are literals built from a validated month.
    conn.execute(
        sa.text(
            f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {table} "
            f"FOR VALUES FROM ('{start.isoformat()}') TO ('{end.isoformat()}')"
        )
    )
    return name


def attached_months(engine: Engine, table: str = PARTITIONED) -> dict[str, int]:
    """month -> rows of each partition attached to `table`, oldest first."""
    t = _checked(table)
    query = sa.text(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(:t) ORDER BY c.relname"
    )
    with engine.connect() as conn:
        names = [r[0] for r in conn.execute(query, {"t": t})]
        return {
            n[len(t) + 1 :].replace("_", "-"): conn.execute(sa.text(f"SELECT count(*) FROM {n}")).scalar_one()
            for n in names
        }


def copy_from_readings(engine: Engine, table: str = PARTITIONED, after_id: int = 0) -> int:
    """Copy the live readings with an id above `after_id` into `table`, creating their months; rows copied
    (a row already there is skipped, so a repeat copies nothing twice)."""
    t = _checked(table)
    with engine.begin() as conn:
        span = conn.execute(
            sa.text('SELECT min("timestamp"), max("timestamp") FROM readings WHERE id > :a'), {"a": after_id}
        ).one()
        if span[0] is None:
            return 0
        for month in months_between(month_of(span[0]), month_of(span[1])):
            ensure_month(conn, t, month)
        result = conn.execute(
            sa.text(f"INSERT INTO {t} SELECT * FROM readings WHERE id > :a ON CONFLICT DO NOTHING"),
            {"a": after_id},
        )
        return result.rowcount


def months_between(first: str, last: str) -> list[str]:
    """Every month from `first` to `last`, both included."""
    start, _ = month_bounds(first)
    months = []
    year, mon = start.year, start.month
    while f"{year:04d}-{mon:02d}" <= last:
        months.append(f"{year:04d}-{mon:02d}")
        year, mon = year + mon // 12, mon % 12 + 1
    return months
