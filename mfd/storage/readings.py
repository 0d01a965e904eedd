"""The readings database (PostgreSQL in production, SQLite embedded): tables and bulk paths."""

from __future__ import annotations

import io

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from mfd.errors import with_retries
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, PERIPHERAL_RANGES, SENSOR_COLUMNS

metadata = sa.MetaData()

# Byte-order comparisons for machine ids on PostgreSQL: the unique key is maintained on every loaded row,
# and locale-aware collations cost several times more per comparison.
MachineId = sa.String(64).with_variant(sa.String(64, collation="C"), "postgresql")

readings = sa.Table(
    "readings",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("machine_type", sa.String(1), nullable=False),
    *(sa.Column(c, sa.Float, nullable=False) for c in SENSOR_COLUMNS),
    sa.Column(LABEL_COLUMN, sa.SmallInteger, nullable=True),
    *(sa.Column(c, sa.SmallInteger, nullable=True) for c in FAILURE_MODE_COLUMNS),
    sa.Column("source", sa.String(512), nullable=True),
    # Time first: readings arrive roughly in time order, so new keys land at the right edge of the index.
    sa.UniqueConstraint("timestamp", "machine_id", name="readings_time_machine_key"),
)

peripheral_readings = sa.Table(
    "peripheral_readings",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("machine_id", MachineId, nullable=False),
    sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
    *(sa.Column(c, sa.Float, nullable=False) for c in PERIPHERAL_RANGES),
    sa.Column("source", sa.String(512), nullable=True),
    sa.UniqueConstraint("timestamp", "machine_id", name="peripheral_time_machine_key"),
)

INSERT_COLUMNS: tuple[str, ...] = tuple(c.name for c in readings.columns if c.name != "id")


def normalize_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL URLs that name no driver."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def create_engine(url: str) -> Engine:
    """Engine for `url`; SQLite files get their directory created and WAL mode."""
    url = normalize_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _wal(dbapi_conn, _record):  # noqa: ANN001 - SQLAlchemy hook
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA synchronous=NORMAL")

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def describe(url: str) -> str:
    """The URL without its password, for messages."""
    return make_url(normalize_url(url)).render_as_string(hide_password=True)


def ensure_tables(engine: Engine, setting: str = "MFD_DATABASE_URL") -> None:
    """Create the tables if missing, retrying while the server is unreachable."""
    with_retries(
        lambda: metadata.create_all(engine),
        what=f"readings database {describe(str(engine.url))}",
        setting=setting,
        retry_on=(sa.exc.OperationalError, sa.exc.InterfaceError),
    )


def _rows_frame(df: pd.DataFrame, source: str | None) -> pd.DataFrame:
    out = pd.DataFrame(index=df.index)
    for col in INSERT_COLUMNS:
        if col in df.columns:
            out[col] = df[col]
        elif col == "source":
            out[col] = source
        else:
            out[col] = pd.NA
    out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
    return out


def insert_readings(engine: Engine, df: pd.DataFrame, source: str | None = None) -> int:
    """Insert readings, skipping any (machine_id, timestamp) already stored; returns rows inserted.

    PostgreSQL: COPY into a temporary table, then one INSERT ... ON CONFLICT DO NOTHING, in one
    transaction. SQLite: executemany INSERT OR IGNORE.
    """
    if df.empty:
        return 0
    rows = _rows_frame(df, source)
    with engine.begin() as conn:
        return insert_readings_in(conn, rows)


def insert_readings_in(conn: sa.Connection, rows: pd.DataFrame) -> int:
    """Insert prepared rows inside the caller's transaction (see `insert_readings`)."""
    if conn.dialect.name == "postgresql":
        return _copy_insert(conn, rows)
    cols = ", ".join(f'"{c}"' for c in INSERT_COLUMNS)
    marks = ", ".join("?" for _ in INSERT_COLUMNS)
    values = rows.astype(object).where(rows.notna(), None)
    values["timestamp"] = rows["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    cursor = conn.connection.driver_connection.cursor()
    before = conn.connection.driver_connection.total_changes
    cursor.executemany(
        f"INSERT OR IGNORE INTO readings ({cols}) VALUES ({marks})", values.itertuples(index=False)
    )
    return conn.connection.driver_connection.total_changes - before


def _copy_insert(conn: sa.Connection, rows: pd.DataFrame) -> int:
    cols = ", ".join(f'"{c}"' for c in INSERT_COLUMNS)
    buf = io.StringIO()
    rows.to_csv(buf, index=False, header=False, date_format="%Y-%m-%d %H:%M:%S.%f+00")
    raw = conn.connection.driver_connection
    with raw.cursor() as cur:
        cur.execute(
            "CREATE TEMP TABLE IF NOT EXISTS readings_staging "
            "(LIKE readings INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS"
        )
        with cur.copy(f"COPY readings_staging ({cols}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(buf.getvalue())
        cur.execute(
            f"INSERT INTO readings ({cols}) SELECT {cols} FROM readings_staging "
            "ON CONFLICT (machine_id, timestamp) DO NOTHING"
        )
        return cur.rowcount


def read_readings(engine: Engine, after_id: int = 0, limit: int | None = None) -> pd.DataFrame:
    """Readings with id > `after_id`, in id order, at most `limit` rows."""
    return read_frame(
        engine, sa.select(readings).where(readings.c.id > after_id).order_by(readings.c.id), limit
    )


def read_frame(engine: Engine, query: sa.Select, limit: int | None = None) -> pd.DataFrame:
    """Rows of a select over a readings-like table (at most `limit`), timestamps as UTC."""
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        df = pd.read_sql(query, conn)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def count_readings(engine: Engine) -> int:
    """Number of stored readings."""
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(readings)).scalar_one())


def max_id(conn: sa.Connection, table: sa.Table = readings) -> int:
    """Highest id stored in `table` (0 when empty), as `conn` sees it."""
    return int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(table.c.id), 0))).scalar_one())


def max_reading_id(engine: Engine) -> int:
    """Highest reading id stored (0 when empty)."""
    with engine.connect() as conn:
        return max_id(conn)
