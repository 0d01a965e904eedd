"""The readings database (PostgreSQL in production, SQLite embedded): engine, table creation, queries and
the readings bulk insert (tables: `mfd.storage.tables`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from mfd.errors import with_retries
from mfd.profiles import DEFAULT_PROFILE, ProfileError
from mfd.schema import KEY_COLUMNS, PROFILE
from mfd.storage.bulk import BulkWriter

# The tables, beside the queries that read them (`store.readings`, `store.peripheral_readings`).
from mfd.storage.tables import metadata, peripheral_readings, plant_profile, readings  # noqa: F401

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
    """Create the tables if missing (and widen a `source` column made before it held any S3 key), retrying
    while the server is unreachable."""

    def create() -> None:
        check_profile(engine)
        metadata.create_all(engine)
        _record_profile(engine)
        if engine.dialect.name == "postgresql":
            _widen_source(engine)

    with_retries(
        create,
        what=f"readings database {describe(str(engine.url))}",
        setting=setting,
        retry_on=(sa.exc.OperationalError, sa.exc.InterfaceError),
    )


def _columns() -> list[str]:
    return [c.name for c in readings.columns]


def check_profile(engine: Engine) -> None:
    """ProfileError (one line naming both) when the database holds another profile's readings: another
    name in `plant_profile`, or a `readings` table with other columns. Reads only: nothing is written."""
    inspector = sa.inspect(engine)
    if not inspector.has_table(readings.name):
        return
    stored = [c["name"] for c in inspector.get_columns(readings.name)]
    name, shown = DEFAULT_PROFILE, f"{DEFAULT_PROFILE} (recorded before profiles)"  # a store made before them
    if inspector.has_table(plant_profile.name):
        with engine.connect() as conn:
            row = conn.execute(sa.select(plant_profile.c.name, plant_profile.c.columns)).first()
        if row is not None:
            name, shown, stored = row.name, row.name, json.loads(row.columns)
    if name != PROFILE.name or sorted(stored) != sorted(_columns()):
        differ = sorted(set(stored) ^ set(_columns()))
        raise ProfileError(
            f"the readings database {describe(str(engine.url))} holds profile {shown}'s readings, not "
            f"profile {PROFILE.name}'s (MFD_PROFILE={PROFILE.path}; columns differing: "
            f"{', '.join(differ) or 'none'}): point MFD_DATABASE_URL at another database or set MFD_PROFILE"
        )


def _record_profile(engine: Engine) -> None:
    """Record the active profile in a database that has no record yet."""
    with engine.begin() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(plant_profile)).scalar():
            return
        row = {
            "id": 1,
            "name": PROFILE.name,
            "digest": PROFILE.digest,
            "columns": json.dumps(_columns()),
            "recorded_at": datetime.now(UTC),
        }
        try:
            with conn.begin_nested():
                conn.execute(plant_profile.insert().values(**row))
        except sa.exc.IntegrityError:  # another process recorded it meanwhile
            pass


def _widen_source(engine: Engine) -> None:
    """`source` was varchar(512), too short for a long S3 key (up to 1024 bytes): make it text (PostgreSQL
    changes only the catalogue, no rewrite)."""
    query = sa.text(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND column_name = 'source' AND data_type = 'character varying' AND table_name IN :names"
    ).bindparams(sa.bindparam("names", expanding=True))
    with engine.begin() as conn:
        for (name,) in conn.execute(query, {"names": [readings.name, peripheral_readings.name]}).all():
            conn.exec_driver_sql(f'ALTER TABLE "{name}" ALTER COLUMN source TYPE text')


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
    """Insert readings in one transaction, skipping any (machine_id, timestamp) already stored; returns
    rows inserted (`mfd.storage.bulk`: COPY, staging merge on PostgreSQL; executemany on SQLite)."""
    if df.empty:
        return 0
    rows = _rows_frame(df, source)
    with engine.begin() as conn:
        return BulkWriter(conn, readings, INSERT_COLUMNS, conflict=KEY_COLUMNS).write_frame(rows)


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
