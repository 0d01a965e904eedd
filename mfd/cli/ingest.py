"""`mfd ingest`: load the CSV files waiting under `incoming/` without Dagster (the code raw_readings runs)."""

from __future__ import annotations

import argparse

from mfd.errors import MfdError
from mfd.ingestion import load as ingest
from mfd.settings import load_settings
from mfd.storage.connect import engine_from_settings, objects_from_settings
from mfd.storage.objects import INCOMING


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="load the CSV files under incoming/ into the readings database",
        description="Validate and bulk-load CSV objects from the object store's incoming/ prefix (S3 when "
        "MFD_S3_BUCKET is set, else the local directory under MFD_HOME) into the readings database; files "
        "under incoming/peripheral/ go to peripheral_readings. Each file then moves to processed/, or to "
        "rejected/ with <name>.reason.json; bad rows go to rejected/<name>.bad_rows.csv. Exit status 1 "
        "when a file was rejected whole. See docs/ingestion.md.",
    )
    parser.add_argument(
        "keys",
        nargs="*",
        metavar="KEY",
        help="object keys, e.g. incoming/a.csv (default: all under incoming/)",
    )
    parser.add_argument("--database-url", help="readings database (default: MFD_DATABASE_URL, else SQLite)")
    parser.add_argument(
        "--chunk-mb",
        type=int,
        default=ingest.CHUNK_BYTES >> 20,
        help="bytes read per block, in MiB (default 8)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.chunk_mb < 1:
        raise MfdError(f"--chunk-mb must be at least 1, got {args.chunk_mb}")
    outside = [k for k in args.keys if not k.startswith(INCOMING)]
    if outside:
        raise MfdError(f"keys must be under {INCOMING}: {', '.join(outside)}")
    settings = load_settings()
    engine = engine_from_settings(settings, args.database_url)
    objects = objects_from_settings(settings)
    keys = args.keys or [o.key for o in objects.list(INCOMING) if not o.key.endswith("/")]
    if not keys:
        print(f"nothing under {INCOMING} in {objects.describe()}")
        return 0
    status = 0
    for key in keys:
        report = ingest.ingest_object(objects, engine, key, chunk_bytes=args.chunk_mb << 20)
        print(
            f"{key}: {report.status}, read {report.read:,} = loaded {report.loaded:,} + duplicate "
            f"{report.duplicate:,} + rejected {report.rejected:,} in {report.seconds:.2f}s "
            f"({report.rows_per_second:,.0f} rows/s) -> {report.filed_as}"
        )
        if report.reason:
            print(f"  rejected whole: {report.reason['rule']}: {report.reason['message']}")
            status = 1
        elif report.bad_rows_key:
            print(f"  bad rows with reasons: {report.bad_rows_key}")
    return status
