"""Ingestion benchmark: a generated CSV on a real S3 server into a real PostgreSQL, end to end.

Measured in one run on the same 1,000,000-row file:
  - mfd.ingestion.load (read from S3, validate every row, COPY, dedup, move to processed/),
  - the seeds-style loader (pandas read_csv + DataFrame.to_sql) on a 100,000-row slice of it,
  - a bare psycopg COPY FROM STDIN of the file into an unindexed table (the ceiling), into a table with
    only the (timestamp, machine_id) unique key (what one key would cost), and into the readings table
    with both its id primary key and that key,
  - mfd.ingestion.load of the same file with a stray quote in the machine id of 1% of its rows (M-"0007,
    which pandas and Arrow read as written; it once made the record splitter quadratic): target <= 2x,
then the peak memory (RSS) of loading a 5,000,000-row file, in a subprocess, and the incoming_files_sensor
tick on the local store (whose listing once checksummed every waiting file: 13.8 s a tick with 20,000
waiting) with 20,000 files waiting (target <= 1 s) and with 100,000 already processed.

Run: .venv/bin/python bench/ingest.py [--rows 1000000] [--big-rows 5000000] [--sensor-only]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import psycopg

from mfd.generator import iter_readings, to_csv_bytes
from mfd.ingestion import incoming
from mfd.ingestion import load as ingest
from mfd.services import S3Server, postgres_server, s3_server
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, S3Objects
from mfd.storage.tables import readings

MACHINES = 100
BASELINE_ROWS = 100_000
STRAY = (b"M-0007,", b'M-"0007,')  # one machine of 100: 1% of the rows


def write_csv(path: Path, rows: int, seed: int) -> Path:
    """The generator's CSV, written block by block."""
    with path.open("wb") as out:
        for i, block in enumerate(iter_readings(MACHINES, rows, seed)):
            data = to_csv_bytes(block)
            out.write(data if i == 0 else data.split(b"\n", 1)[1])
    return path


def with_stray_quotes(path: Path, out: Path) -> Path:
    """The same file with a stray quote inside the machine id of one machine's rows."""
    with path.open("rb") as src, out.open("wb") as dst:
        for line in src:
            dst.write(line.replace(*STRAY) if line.startswith(STRAY[0]) else line)
    return out


def fresh_engine(server, name: str):  # noqa: ANN001, ANN201 - bench helper
    engine = store.create_engine(server.create_database(name))
    store.ensure_tables(engine)
    return engine


def run_ingest(s3: S3Server, bucket: str, key: str, url: str) -> dict[str, float]:
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    report = ingest.ingest_object(S3Objects(s3.client(), bucket), engine, key)
    assert report.status == "processed" and report.read == report.loaded, report
    return {"rows": report.read, "seconds": report.seconds, "rows_per_second": report.rows_per_second}


def seeds_to_sql(s3: S3Server, bucket: str, key: str, engine, rows: int) -> float:  # noqa: ANN001
    """The seeds' loader: pandas read_csv of the object, then DataFrame.to_sql into the readings table."""
    started = time.perf_counter()
    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"]
    df = pd.read_csv(body, nrows=rows)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    df.to_sql("readings", engine, if_exists="append", index=False)
    return rows / (time.perf_counter() - started)


def bare_copy(s3: S3Server, bucket: str, key: str, server, variant: str) -> float:  # noqa: ANN001
    """psycopg COPY FROM STDIN of the object as it streams from S3, with no checks: into a table with no
    index (`ceiling`), one with only the (timestamp, machine_id) unique key and no surrogate id (`one_key`),
    or the empty readings table with its id primary key and its unique key (`indexed`)."""
    store.ensure_tables(store.create_engine(server.create_database(variant)))
    columns = [c.name for c in readings.columns if c.name not in ("id", "source")]
    quoted = ", ".join(f'"{c}"' for c in columns)
    table = "readings" if variant == "indexed" else "bare"
    with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname=variant) as conn:
        if variant != "indexed":
            conn.execute(f"CREATE TABLE bare AS SELECT {quoted} FROM readings WITH NO DATA")
            if variant == "one_key":
                conn.execute('ALTER TABLE bare ADD UNIQUE ("timestamp", machine_id)')
            conn.commit()
        started = time.perf_counter()
        body = s3.client().get_object(Bucket=bucket, Key=key)["Body"]
        blocks = iter(lambda: body.read(1 << 20), b"")
        header, first = next(blocks).split(b"\n", 1)
        names = ", ".join(f'"{c}"' for c in header.decode().strip().split(","))
        with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN WITH (FORMAT csv)") as copy:
            copy.write(first)
            for block in blocks:
                copy.write(block)
        conn.commit()
        rows = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
        return rows / (time.perf_counter() - started)


def child(args: argparse.Namespace) -> None:
    """The 5M-row load, alone in this process so that its peak RSS is the load's."""
    s3 = S3Server(args.endpoint, args.access_key, args.secret_key)
    result = run_ingest(s3, args.bucket, args.key, args.url)
    result["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(result))


def _files(folder: Path, count: int, prefix: str, body: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"{prefix}-{i:06d}.csv").write_bytes(body)


def _tick(store, cursor: str | None) -> tuple[float, str | None, int]:  # noqa: ANN001 - LocalObjectStore
    """One evaluation of incoming_files_sensor: seconds, the cursor it leaves, run requests."""
    import dagster as dg

    from mfd_sensors.incoming import incoming_files_sensor

    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources={"object_store": store}
    ) as ctx:
        started = time.perf_counter()
        result = incoming_files_sensor(ctx)
        seconds = time.perf_counter() - started
    if isinstance(result, dg.SkipReason):
        return seconds, cursor, 0
    return seconds, result.cursor, len(result.run_requests)


def sensor_ticks(tmp: Path, waiting: int = 20_000, processed: int = 100_000) -> None:
    """The sensor's tick on the local store: with `waiting` files (4 KiB each) waiting, then with
    `processed` files through it and under processed/ and 50 new ones waiting."""
    from mfd_resources import LocalObjectStore

    root = tmp / "sensor-objects"
    body = b"x" * 4096
    _files(root / "incoming", waiting, "waiting", body)
    store = LocalObjectStore(root=str(root))
    time.sleep(LocalObjects.settle.total_seconds())  # settled: the tick hands out its 50
    first, cursor, requested = _tick(store, None)
    second, cursor, again = _tick(store, cursor)
    print(f"\nincoming_files_sensor tick, local store, {waiting:,} files waiting (4 KiB each)")
    print(f"  first tick {first:.3f}s ({requested} requested), next tick {second:.3f}s ({again} requested)")
    print(
        f"  cursor {len(cursor or ''):,} bytes; target <= 1 s: {'met' if max(first, second) <= 1 else 'NOT met'}"
    )

    for path in (root / "incoming").iterdir():
        path.unlink()
    _files(root / "incoming", processed, "done", b"x\n")
    objects = LocalObjects(root)
    later = datetime.now(UTC) + LocalObjects.settle
    walked = incoming.look(objects, incoming.IncomingCursor(), later, limit=processed).cursor
    (root / "processed").mkdir()
    for path in (root / "incoming").iterdir():
        os.rename(path, root / "processed" / path.name)
    _files(root / "incoming", 50, "new", body)
    time.sleep(LocalObjects.settle.total_seconds())
    seconds, cursor, requested = _tick(store, walked.dumps())
    print(
        f"  with {processed:,} files already handed out and processed, 50 new: tick {seconds:.3f}s "
        f"({requested} requested), cursor {len(cursor or ''):,} bytes"
    )


def main(args: argparse.Namespace) -> None:
    if args.sensor_only:
        with tempfile.TemporaryDirectory(prefix="mfd-bench-") as tmp:
            sensor_ticks(Path(tmp))
        return
    with s3_server() as s3, postgres_server() as pg, tempfile.TemporaryDirectory(prefix="mfd-bench-") as tmp:
        bucket = s3.create_bucket("bench")
        objects = S3Objects(s3.client(), bucket)
        started = time.perf_counter()
        path = write_csv(Path(tmp) / "readings.csv", args.rows, seed=1)
        print(
            f"generated {args.rows:,} rows ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - started:.1f}s"
        )
        key = "incoming/readings.csv"
        objects.upload(key, path)

        ceiling = bare_copy(s3, bucket, key, pg, "ceiling")
        one_key = bare_copy(s3, bucket, key, pg, "one_key")
        indexed = bare_copy(s3, bucket, key, pg, "indexed")
        baseline_rows = min(BASELINE_ROWS, args.rows)
        baseline = seeds_to_sql(s3, bucket, key, fresh_engine(pg, "seeds"), baseline_rows)
        ours = run_ingest(s3, bucket, key, pg.create_database("ours"))

        rate = ours["rows_per_second"]
        print(f"\n{args.rows:,} rows, S3 -> PostgreSQL, end to end")
        print(
            f"  mfd.ingestion.load (read, validate, COPY, dedup, move) {rate:>10,.0f} rows/s  ({ours['seconds']:.1f}s)"
        )
        print(f"  seeds pandas read_csv + to_sql ({baseline_rows:,}-row slice) {baseline:>10,.0f} rows/s")
        print(f"  bare psycopg COPY FROM STDIN, no index (ceiling) {ceiling:>10,.0f} rows/s")
        print(f"  bare COPY, only the (timestamp, machine_id) key (no id) {one_key:>10,.0f} rows/s")
        print(f"  bare COPY into the indexed readings table (no checks, no dedup) {indexed:>10,.0f} rows/s")
        print(f"  ratio mfd.ingestion.load / to_sql: {rate / baseline:.1f}x (target >= 12x)")
        print(
            f"  12x to_sql would be {12 * baseline:,.0f} rows/s; a bare COPY into the same indexed table "
            f"(no reading, checks or dedup) is {indexed / baseline:.1f}x"
        )
        print(
            f"  ratio mfd.ingestion.load / bare COPY: {rate / ceiling:.2f}; / COPY into indexed readings: {rate / indexed:.2f}"
        )
        print(f"  target >= 250,000 rows/s: {'met' if rate >= 250_000 else 'NOT met'}")

        stray = with_stray_quotes(path, Path(tmp) / "stray.csv")
        objects.upload("incoming/stray.csv", stray)
        stray.unlink()
        quoted = run_ingest(s3, bucket, "incoming/stray.csv", pg.create_database("stray"))
        slower = rate / quoted["rows_per_second"]
        print(f'\n{args.rows:,} rows with a stray quote in 1% of the machine ids (M-"0007)')
        print(
            f"  mfd.ingestion.load {quoted['rows_per_second']:>10,.0f} rows/s ({quoted['seconds']:.1f}s) "
            f"against {rate:,.0f} rows/s without them"
        )
        print(
            f"  ratio clean / stray-quote time: {slower:.2f}x (target <= 2x: {'met' if slower <= 2 else 'NOT met'})"
        )

        big = write_csv(Path(tmp) / "big.csv", args.big_rows, seed=2)
        objects.upload("incoming/big.csv", big)
        big.unlink()
        path.unlink()
        cmd = [
            sys.executable,
            __file__,
            "--child",
            "--endpoint",
            s3.endpoint_url,
            "--access-key",
            s3.access_key,
        ]
        cmd += ["--secret-key", s3.secret_key, "--bucket", bucket, "--key", "incoming/big.csv"]
        cmd += ["--url", pg.create_database("big")]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        result = json.loads(done.stdout.strip().splitlines()[-1])
        peak = result["max_rss_bytes"] / 2**20
        print(f"\n{args.big_rows:,} rows: {result['rows_per_second']:,.0f} rows/s ({result['seconds']:.1f}s)")
        print(
            f"  peak RSS of the loading process {peak:,.0f} MiB (target <= 1024 MiB: {'met' if peak <= 1024 else 'NOT met'})"
        )
        sensor_ticks(Path(tmp))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big-rows", type=int, default=5_000_000)
    parser.add_argument("--sensor-only", action="store_true", help="only the sensor tick lines")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("endpoint", "access-key", "secret-key", "bucket", "key", "url"):
        parser.add_argument(f"--{name}", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    child(parsed) if parsed.child else main(parsed)
