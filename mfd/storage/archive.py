"""Old months of the partitioned readings store (`mfd.storage.partitions`) archived to Parquet in the bucket,
then detached and dropped; and restored from there. An archive is `archive/<table>/<YYYY-MM>.parquet`
plus `<YYYY-MM>.json` (rows, id range, SHA-256 of the Parquet file): the month is detached only once the
stored file reads back with the month's row count, and a restore checks the hash and the count again."""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.storage.objects import Objects
from mfd.storage.partitions import PARTITIONED, attached_months, ensure_month, partition_name

BATCH_ROWS = 200_000  # rows read from PostgreSQL and written to Parquet at a time


@dataclass(frozen=True)
class MonthArchive:
    """What the manifest beside an archived month records."""

    table: str
    month: str
    rows: int
    min_id: int | None
    max_id: int | None
    sha256: str
    key: str


def archive_keys(table: str, month: str) -> tuple[str, str]:
    """(Parquet key, manifest key) of `month` of `table`."""
    base = f"archive/{table}/{month}"
    return f"{base}.parquet", f"{base}.json"


def _write_parquet(engine: Engine, partition: str, path: Path) -> tuple[int, int | None, int | None]:
    """The partition's rows, in id order, into one Parquet file; (rows, min id, max id)."""
    rows, low, high, writer = 0, None, None, None
    with engine.connect().execution_options(stream_results=True) as conn:
        chunks = pd.read_sql(sa.text(f"SELECT * FROM {partition} ORDER BY id"), conn, chunksize=BATCH_ROWS)
        for chunk in chunks:
            table = pa.Table.from_pandas(chunk, preserve_index=False)
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            rows += len(chunk)
            low = int(chunk["id"].iloc[0]) if low is None else low
            high = int(chunk["id"].iloc[-1])
    if writer is None:
        return 0, None, None
    writer.close()
    return rows, low, high


def archive_month(engine: Engine, objects: Objects, month: str, table: str = PARTITIONED) -> MonthArchive:
    """Write `month` to the bucket, check the stored copy, then detach and drop the partition."""
    partition = partition_name(table, month)
    if month not in attached_months(engine, table):
        raise MfdError(f"{partition} is not an attached partition of {table}: nothing to archive")
    key, manifest_key = archive_keys(table, month)
    with tempfile.TemporaryDirectory(prefix="mfd-archive-") as tmp:
        path = Path(tmp) / "month.parquet"
        rows, low, high = _write_parquet(engine, partition, path)
        if rows == 0:
            raise MfdError(f"{partition} is empty: drop it instead of archiving it")
        objects.upload(key, path)
    stored = objects.get(key)
    if pq.read_metadata(io.BytesIO(stored)).num_rows != rows:
        raise MfdError(f"{key} does not read back with {rows} rows: {partition} stays attached")
    archive = MonthArchive(table, month, rows, low, high, hashlib.sha256(stored).hexdigest(), key)
    objects.put(manifest_key, json.dumps(asdict(archive), indent=1).encode())
    with engine.begin() as conn:
        counted = conn.execute(sa.text(f"SELECT count(*) FROM {partition}")).scalar_one()
        if counted != rows:  # rows loaded into the month while it was written: archive it again later
            raise MfdError(
                f"{partition} changed while archived ({rows} -> {counted} rows): it stays attached"
            )
        conn.execute(sa.text(f"ALTER TABLE {table} DETACH PARTITION {partition}"))
        conn.execute(sa.text(f"DROP TABLE {partition}"))
    return archive


def read_manifest(objects: Objects, month: str, table: str = PARTITIONED) -> MonthArchive:
    _, manifest_key = archive_keys(table, month)
    if not objects.exists(manifest_key):
        raise MfdError(f"no archive of {month} for {table} ({manifest_key} missing)")
    return MonthArchive(**json.loads(objects.get(manifest_key)))


def archived_months(objects: Objects, table: str = PARTITIONED) -> list[str]:
    """Months of `table` with a manifest in the bucket, oldest first."""
    prefix = f"archive/{table}/"
    return sorted(o.key[len(prefix) : -len(".json")] for o in objects.list(prefix) if o.key.endswith(".json"))


def restore_month(engine: Engine, objects: Objects, month: str, table: str = PARTITIONED) -> int:
    """Load an archived month back into a new partition (refused when the month is attached); rows loaded."""
    archive = read_manifest(objects, month, table)
    if month in attached_months(engine, table):
        raise MfdError(f"{partition_name(table, month)} is attached: archive it first or drop it to restore")
    stored = objects.get(archive.key)
    if hashlib.sha256(stored).hexdigest() != archive.sha256:
        raise MfdError(f"{archive.key} does not match its manifest's SHA-256: not restored")
    parquet = pq.ParquetFile(io.BytesIO(stored))
    with engine.begin() as conn:
        partition = ensure_month(conn, table, month)
        cursor = conn.connection.driver_connection.cursor()
        columns = ", ".join(f'"{c}"' for c in parquet.schema_arrow.names)
        with cursor.copy(f"COPY {partition} ({columns}) FROM STDIN") as copy:
            for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
                for row in (
                    batch.to_pandas().astype(object).where(lambda f: f.notna(), None).itertuples(index=False)
                ):
                    copy.write_row(row)
        loaded = conn.execute(sa.text(f"SELECT count(*) FROM {partition}")).scalar_one()
        if loaded != archive.rows:
            raise MfdError(
                f"{archive.key} restored {loaded} rows, its manifest says {archive.rows}: rolled back"
            )
    return loaded
