"""`mfd partitions`: the readings store partitioned by month (PostgreSQL), old months archived to Parquet in
the bucket and detached, and restored (`mfd.storage.partitions`, `mfd.storage.archive`)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from mfd.settings import load_settings
from mfd.storage.archive import archive_month, archived_months, restore_month
from mfd.storage.connect import engine_from_settings, objects_from_settings
from mfd.storage.partitions import (
    PARTITIONED,
    attached_months,
    copy_from_readings,
    create_partitioned,
    month_bounds,
)


def _months_ago(months: int, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    index = now.year * 12 + now.month - 1 - months
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def sync(args: argparse.Namespace) -> int:
    engine = engine_from_settings(load_settings())
    create_partitioned(engine, args.table)
    after = args.after_id
    copied = copy_from_readings(engine, args.table, after)
    print(f"copied {copied:,} readings with id > {after} into {args.table}")
    return 0


def show(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = engine_from_settings(settings)
    attached = attached_months(engine, args.table)
    for month, rows in attached.items():
        print(f"{month}  attached  {rows:>12,} rows")
    for month in archived_months(objects_from_settings(settings), args.table):
        if month not in attached:
            print(f"{month}  archived")
    return 0


def archive(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine, objects = engine_from_settings(settings), objects_from_settings(settings)
    if args.month:
        months = [args.month]
    else:
        keep_from = _months_ago(args.keep_months - 1)
        months = [m for m in attached_months(engine, args.table) if m < keep_from]
    for month in months:
        month_bounds(month)
        done = archive_month(engine, objects, month, args.table)
        print(f"archived {month}: {done.rows:,} rows to {done.key}, partition detached and dropped")
    if not months:
        print(f"no attached month older than the last {args.keep_months}")
    return 0


def restore(args: argparse.Namespace) -> int:
    settings = load_settings()
    rows = restore_month(
        engine_from_settings(settings), objects_from_settings(settings), args.month, args.table
    )
    print(f"restored {args.month}: {rows:,} rows into {args.table}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "partitions",
        help="readings partitioned by month: sync, list, archive old months to Parquet in the bucket, restore",
        description="The opt-in monthly-partitioned readings table (PostgreSQL) and its archive in the bucket "
        "(archive/<table>/<YYYY-MM>.parquet + .json); docs/operating.md 'Readings retention'.",
    )
    parser.add_argument("--table", default=PARTITIONED, help=f"partitioned table (default {PARTITIONED})")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    syncing = actions.add_parser("sync", help="create the table if missing and copy readings into it")
    syncing.add_argument("--after-id", type=int, default=0, help="copy only readings above this id")
    syncing.set_defaults(func=sync)
    actions.add_parser("list", help="attached months with their rows, and archived months").set_defaults(
        func=show
    )
    archiving = actions.add_parser("archive", help="archive months to Parquet, then detach and drop them")
    which = archiving.add_mutually_exclusive_group(required=True)
    which.add_argument("--month", help="one month, YYYY-MM")
    which.add_argument(
        "--keep-months", type=int, help="every attached month before the last N (this one included)"
    )
    archiving.set_defaults(func=archive)
    restoring = actions.add_parser("restore", help="load an archived month back as an attached partition")
    restoring.add_argument("--month", required=True, help="YYYY-MM")
    restoring.set_defaults(func=restore)
