"""Scale figures of today's design, one run, every figure printed as it is measured (issue 29):

1. Dynamic partitions (one per incoming file) on a PostgreSQL Dagster instance at 10k / 100k / 300k keys of
   raw_readings' `incoming_files`: the instance calls a sensor tick makes for a new file (is the key there,
   add it; Dagster's sensor daemon does both for a tick's AddDynamicPartitionsRequest and partitioned run
   request) and the asset page's GraphQL query (partition keys, stats and statuses) against the mfd code
   location loaded by a code server, as the UI asks it. The keys carry no materializations: a lower bound.
2. Readings on PostgreSQL at 2M and 20M rows: detection's cursor read (the next 20,000 readings after the
   cursor, `read_readings`), the training-set query (`read_sources`: every labelled reading, by design
   O(rows)) and a query bounded to the last day of readings; the 20M figure over the 2M one.
3. main_job's steps (tests/scale/celery_helpers.STEPS) with the dagster-celery executor on two workers vs
   the in-process executor, in the same run, same services, same readings.

    python bench/scale.py [--partitions 10000,100000,300000] [--readings 2000000,20000000] [--no-celery]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "scale"))

import sqlalchemy as sa  # noqa: E402

from mfd.errors import MfdError  # noqa: E402
from mfd.generator.fleet import generate_readings  # noqa: E402
from mfd.services import postgres_server  # noqa: E402

ASSET_PAGE = """
query AssetPage($key: AssetKeyInput!) {
  assetNodes(assetKeys: [$key]) {
    partitionKeysByDimension { name partitionKeys }
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    assetPartitionStatuses { __typename ... on DefaultPartitionStatuses { materializedPartitions failedPartitions } }
  }
}
"""


def timed(fn: Callable[[], object], repeat: int = 3) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def instance_env(home: Path, pg, dbname: str) -> dict[str, str]:  # noqa: ANN001 - Postgres
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    return {
        "DAGSTER_HOME": str(home),
        "MFD_DAGSTER_PG_HOST": pg.host,
        "MFD_DAGSTER_PG_PORT": str(pg.port),
        "MFD_DAGSTER_PG_USER": pg.user,
        "MFD_DAGSTER_PG_PASSWORD": "",
        "MFD_DAGSTER_PG_DB": dbname,
    }


def bench_partitions(pg, root: Path, sizes: list[int]) -> None:  # noqa: ANN001
    import dagster as dg
    from dagster_graphql.test.utils import define_out_of_process_workspace, execute_dagster_graphql

    pg.create_database("benchdagster")
    os.environ.update(instance_env(root / "dagster", pg, "benchdagster"))
    os.environ["MFD_HOME"] = str(root / "mfd")
    name, have = "incoming_files", 0
    with dg.DagsterInstance.get() as instance:
        location = str(REPO / "mfd_assets" / "definitions.py")
        with define_out_of_process_workspace(location, "defs", instance) as workspace:
            for size in sizes:
                started = time.perf_counter()
                while have < size:
                    batch = [f"incoming/bench/{i:07d}.csv" for i in range(have, min(size, have + 10_000))]
                    instance.add_dynamic_partitions(name, batch)
                    have += len(batch)
                print(f"partitions {size:>7,}: added in {time.perf_counter() - started:.1f} s", flush=True)
                fresh = iter(range(10**6))

                def tick(fresh: object = fresh, size: int = size) -> None:
                    key = f"incoming/new/{next(fresh)}-{size}.csv"
                    if not instance.has_dynamic_partition(name, key):
                        instance.add_dynamic_partitions(name, [key])
                    assert instance.has_dynamic_partition(name, key)  # the run request's partition check

                tick_s = timed(tick, 5)
                keys_s = timed(lambda: instance.get_dynamic_partitions(name), 3)

                def page(size: int = size) -> None:
                    # A request context per page load, as the webserver makes per request (no cached keys).
                    ctx = workspace.create_request_context()
                    result = execute_dagster_graphql(ctx, ASSET_PAGE, {"key": {"path": ["raw_readings"]}})
                    assert not result.errors, result.errors
                    assert result.data["assetNodes"][0]["partitionStats"]["numPartitions"] >= size

                page_s = timed(page, 3)
                print(
                    f"partitions {size:>7,}: sensor tick partition work {tick_s * 1000:.1f} ms, "
                    f"all keys {keys_s * 1000:.0f} ms, asset page GraphQL {page_s:.2f} s",
                    flush=True,
                )


def fill_readings(engine: sa.Engine, rows: int, base: int = 100_000) -> None:
    """`base` generated readings, then copies of them shifted later in time until `rows` are stored."""
    from mfd.storage.readings import ensure_tables, insert_readings
    from mfd.storage.tables import readings

    ensure_tables(engine)
    with engine.connect() as conn:
        have = conn.execute(sa.select(sa.func.count()).select_from(readings)).scalar_one()
    if have == 0:
        insert_readings(engine, generate_readings(machines=100, rows=base, seed=1, interval_s=60))
        have = base
    columns = [c.name for c in readings.columns if c.name != "id"]
    names = ", ".join(f'"{c}"' for c in columns)
    span = timedelta(minutes=base // 100 + 1)
    exprs = ", ".join(
        f"\"{c}\" + k * interval '{int(span.total_seconds())} seconds'" if c == "timestamp" else f'"{c}"'
        for c in columns
    )
    while have < rows:
        copies = min((rows - have) // base, 50)
        first = have // base
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    f"INSERT INTO readings ({names}) SELECT {exprs} FROM readings r, "
                    f"generate_series({first}, {first + copies - 1}) k WHERE r.id <= {base}"
                )
            )
            conn.execute(sa.text("ANALYZE readings"))
        have += copies * base


def bench_readings(pg, sizes: list[int], full_max: int) -> None:  # noqa: ANN001
    from mfd.preparation.training_set import read_sources
    from mfd.storage.readings import create_engine, max_reading_id, read_frame, read_readings
    from mfd.storage.tables import readings

    url = pg.create_database("benchreadings")
    engine = create_engine(url)
    figures: dict[int, tuple[float, float, float]] = {}
    for size in sizes:
        started = time.perf_counter()
        fill_readings(engine, size)
        print(f"readings {size:>11,}: stored in {time.perf_counter() - started:.0f} s", flush=True)
        top = max_reading_id(engine)
        cursor_s = timed(lambda top=top: read_readings(engine, after_id=top - 40_000, limit=20_000), 3)
        with engine.connect() as conn:
            last = conn.execute(sa.select(sa.func.max(readings.c.timestamp))).scalar_one()
        window = sa.select(readings).where(readings.c.timestamp >= last - timedelta(days=1))
        window_s = timed(lambda window=window: read_frame(engine, window), 1)
        full_s = timed(lambda: read_sources(engine), 1) if size <= full_max else float("nan")
        figures[size] = (cursor_s, full_s, window_s)
        print(
            f"readings {size:>11,}: cursor read (20,000 rows) {cursor_s * 1000:.0f} ms, training-set query "
            f"(all rows) {full_s:.1f} s, last-day query (~144,000 rows) {window_s:.2f} s",
            flush=True,
        )
    if len(sizes) >= 2:
        small, big = figures[sizes[0]], figures[sizes[-1]]
        print(
            f"readings {sizes[-1]:,} vs {sizes[0]:,}: cursor read x{big[0] / small[0]:.2f}, training-set query "
            f"x{big[1] / small[1]:.2f}, last-day query x{big[2] / small[2]:.2f}",
            flush=True,
        )


def bench_celery(pg, root: Path) -> None:  # noqa: ANN001
    from celery_helpers import celery_config, cluster_env, finish, two_workers
    from celery_helpers import generate_readings as store_readings

    from mfd.services import mlflow_server, s3_server
    from mfd.services.redis import redis_server

    with s3_server() as s3, redis_server() as redis, contextlib.ExitStack() as stack:
        backend = pg.create_database("benchmlflow").replace("+psycopg", "+psycopg2")
        artifacts = f"s3://{s3.create_bucket('bench-mlflow')}/"
        for attempt in range(3):  # its 120 s start limit is not always enough on a loaded host
            try:
                mlflow = stack.enter_context(mlflow_server(backend, artifacts, s3))
                break
            except MfdError:
                if attempt == 2:
                    raise
        cluster = cluster_env(root / "celery", pg, s3, mlflow, redis, "benchcelery")
        (root / "celery").mkdir(exist_ok=True)
        print(f"celery: {store_readings(cluster, 20_000):,} readings stored", flush=True)
        _, ok, out = finish(cluster.start_run("main_job", location=REPO / "mfd_assets" / "definitions.py"))
        assert ok, out[-3000:]
        in_process = float(out.rsplit("seconds=", 1)[1].split()[0])
        print(f"celery: main_job steps in-process {in_process:.1f} s", flush=True)
        config = celery_config(root / "celery.yaml", 7200)
        with two_workers(cluster, config):
            _, ok, out = finish(cluster.start_run("main_job"))
        assert ok, out[-3000:]
        on_celery = float(out.rsplit("seconds=", 1)[1].split()[0])
        print(
            f"celery: main_job steps on two workers {on_celery:.1f} s, in-process {in_process:.1f} s: "
            f"x{on_celery / in_process:.2f}",
            flush=True,
        )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", default="10000,100000,300000")
    parser.add_argument("--readings", default="2000000,20000000")
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument(
        "--full-query-max",
        type=int,
        default=2_000_000,
        help="run the all-rows training-set query only up to this many readings (nan above: it is O(rows) "
        "in time and memory by design; 200,000 rows took ~19 s on the loaded 2-core host)",
    )
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="mfd-bench-scale-"))
    try:
        with postgres_server() as pg:
            if args.partitions:
                bench_partitions(pg, root, [int(n) for n in args.partitions.split(",")])
            if args.readings:
                bench_readings(pg, [int(n) for n in args.readings.split(",")], args.full_query_max)
            if not args.no_celery:
                bench_celery(pg, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
