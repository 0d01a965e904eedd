"""`mfd generate` throughput into PostgreSQL (COPY) and into CSV files, against a seeds-style baseline.

The baseline is the old generator's write path: one INSERT and one COMMIT per reading, measured on a small
sample in the same run against the same PostgreSQL server (fsync on, as in production).

    .venv/bin/python bench/generate.py [--rows 500000] [--machines 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import psycopg

from mfd.cli.main import build_parser
from mfd.cli.main import main as mfd_main
from mfd.generator import generate_readings, to_csv_bytes
from mfd.services import postgres_server
from mfd.storage import readings as store

BASELINE_ROWS = 2_000


def timed(fn) -> float:  # noqa: ANN001 - any zero-argument callable
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def cli(*argv: str) -> None:
    if mfd_main(["generate", "--quiet", "--seed", "1", "--start", "2026-01-01", *argv]) != 0:
        raise SystemExit(f"mfd generate {' '.join(argv)} failed")


def baseline_rows_per_s(url: str) -> float:
    """Seeds-style: each reading its own INSERT and COMMIT."""
    rows = generate_readings(10, BASELINE_ROWS, seed=2).drop(columns=["twf", "hdf", "pwf", "osf", "rnf"])
    columns = ", ".join(f'"{c}"' for c in rows.columns)
    marks = ", ".join(["%s"] * len(rows.columns))
    values = [tuple(r) for r in rows.astype(object).itertuples(index=False)]
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql")) as conn:

        def insert_one_by_one() -> None:
            for row in values:
                conn.execute(f"INSERT INTO readings ({columns}) VALUES ({marks})", row)
                conn.commit()

        return BASELINE_ROWS / timed(insert_one_by_one)


def run(rows: int, machines: int) -> None:
    home = Path(tempfile.mkdtemp(prefix="mfd-bench-generate-"))
    os.environ["MFD_HOME"] = str(home)
    for name in ("MFD_DATABASE_URL", "MFD_S3_BUCKET"):
        os.environ.pop(name, None)
    build_parser()  # import every subcommand's module once, outside the timings
    sample = generate_readings(machines, rows, seed=1)
    memory = rows / timed(lambda: generate_readings(machines, rows, seed=1))
    csv_only = rows / timed(lambda: to_csv_bytes(sample))
    files = rows / timed(lambda: cli("--rows", str(rows), "--machines", str(machines), "--sink", "files"))
    with postgres_server(fsync=True) as pg:
        url = pg.create_database("bench")
        postgres = rows / timed(
            lambda: cli("--rows", str(rows), "--machines", str(machines), "--database-url", url)
        )
        count = store.count_readings(store.create_engine(url))
        if count != rows:
            raise SystemExit(f"expected {rows} readings in PostgreSQL, found {count}")
        baseline_url = pg.create_database("baseline")
        store.ensure_tables(store.create_engine(baseline_url))
        baseline = baseline_rows_per_s(baseline_url)
    print(f"mfd generate benchmark: {rows:,} readings from {machines} machines, 2 cores")
    print(f"  generator in memory                 {memory:>12,.0f} rows/s")
    print(f"  CSV encoding only (Arrow)           {csv_only:>12,.0f} rows/s")
    print(f"  mfd generate --sink files (local)   {files:>12,.0f} rows/s")
    print(f"  mfd generate --sink db (PostgreSQL) {postgres:>12,.0f} rows/s")
    print(f"  baseline: INSERT + COMMIT per row   {baseline:>12,.0f} rows/s  ({BASELINE_ROWS:,} rows)")
    print(f"  ratio PostgreSQL / baseline         {postgres / baseline:>12,.1f}x")
    print(f"  ratio CSV files / baseline          {files / baseline:>12,.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--machines", type=int, default=100)
    options = parser.parse_args()
    run(options.rows, options.machines)
