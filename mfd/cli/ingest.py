"""`mfd ingest`: load the CSV files waiting under `incoming/` without Dagster (the code raw_readings runs)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.ingestion import incoming
from mfd.ingestion import load as ingest
from mfd.settings import load_settings
from mfd.storage.conflicts import DIFFER_POLICIES, Differ
from mfd.storage.connect import engine_from_settings, objects_from_settings
from mfd.storage.objects import INCOMING, ObjectChanged, ObjectRefused, Objects

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "ingest",
        help="load the CSV files under incoming/ into the readings database",
        description="Validate and bulk-load CSV objects from the object store's incoming/ prefix (S3 when "
        "MFD_S3_BUCKET is set, else the local directory under MFD_HOME) into the readings database; files "
        "under incoming/peripheral/ go to peripheral_readings. Each file then moves to processed/, or to "
        "rejected/ with <name>.reason.json, under a name carrying its version (<name>@<etag>.csv); bad rows go to "
        "rejected/<name>@<etag>.csv.bad_rows.csv, rows stored already with other values to "
        "<...>.conflicts.csv (MFD_CONFLICT_POLICY=reject) or over the stored ones (replace, old values kept "
        "in reading_revisions). Every file is tried and reported; a failing one "
        "does not stop the rest. Exit status: 0 every file loaded, 1 a file was rejected whole (fix the file), "
        "3 a file could not be loaded because a service, the disk or the object store failed (it stays in "
        "incoming/: run again once fixed), 2 bad options or settings. See docs/ingestion.md.",
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
    parser.add_argument(
        "--settle-seconds",
        type=float,
        help="without KEYs: a file changed less than this long ago is waited for, then read only if a second "
        "listing shows it unchanged (default: the store's: 2 for S3, whose puts are atomic but LastModified is to the second, 5 locally)",
    )
    parser.add_argument(
        "--conflict-policy",
        choices=DIFFER_POLICIES,
        help="a row stored already with other values: reject (set aside) or replace (default: "
        "MFD_CONFLICT_POLICY, else reject)",
    )
    parser.set_defaults(func=run)


EXIT_REJECTED = 1  # a file's content was refused: fix the file (the reason is beside it under rejected/)
EXIT_FAILED = 3  # a service, the disk or the object store failed: fix that and run again; the file waits


@dataclass
class Tally:
    """Per-file outcomes of one `mfd ingest` run."""

    loaded: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    waiting: list[str] = field(default_factory=list)  # changed while read, or still being written: next run

    @property
    def status(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_REJECTED if self.rejected else 0

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} loaded", f"{len(self.rejected)} rejected", f"{len(self.failed)} failed"]
        if self.waiting:
            parts.append(f"{len(self.waiting)} still being written (left in {INCOMING} for the next run)")
        files = sum(map(len, (self.loaded, self.rejected, self.failed, self.waiting)))
        line = f"{files} files: " + ", ".join(parts)
        if self.failed:
            line += f"; still in {INCOMING}, run again once fixed: " + ", ".join(self.failed)
        return line


def failure_line(exc: BaseException) -> str:
    """One line saying what went wrong; an MfdError's message already names what to fix."""
    if isinstance(exc, MfdError):
        return str(exc).strip().splitlines()[0]
    if isinstance(exc, OSError):
        return (
            f"{exc.strerror or type(exc).__name__} ({exc.filename or 'disk'}): free space or fix permissions"
        )
    first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else exc!r}"


def ingest_one(
    objects: Objects,
    engine: Engine,
    key: str,
    chunk_bytes: int,
    tally: Tally,
    conflict_policy: Differ = "reject",
) -> None:
    """Ingest `key`, print its line(s) and count it; a failure is reported and the run goes on."""
    try:
        report = ingest.ingest_object(
            objects,
            engine,
            key,
            chunk_bytes=chunk_bytes,
            conflict_policy=conflict_policy,
            window=load_settings().timestamp_window(),
            max_bytes=load_settings().max_file_bytes,
        )
    except ObjectRefused as exc:  # a symbolic link or not a regular file: the file's fault, never followed
        print(f"{key}: rejected: {failure_line(exc)}")
        tally.rejected.append(key)
        return
    except ObjectChanged as exc:  # still being written: nothing kept, it waits for the next run
        print(f"{key}: left in {INCOMING}: {failure_line(exc)}")
        tally.waiting.append(key)
        return
    except Exception as exc:  # noqa: BLE001 - a service, the disk, the store or a bug: this file fails, the run goes on
        log.debug("ingesting %s failed", key, exc_info=True)
        print(f"{key}: failed: {failure_line(exc)}")
        tally.failed.append(key)
        return
    print(
        f"{key}: {report.status}, read {report.read:,} = loaded {report.loaded:,} + duplicate "
        f"{report.duplicate:,} + conflicting {report.conflicting:,} + rejected {report.rejected:,} in "
        f"{report.seconds:.2f}s ({report.rows_per_second:,.0f} rows/s) -> {report.filed_as or 'not filed'}"
    )
    if report.not_filed:
        print(f"  not filed: {report.not_filed}")
    if report.reason:
        print(f"  rejected whole: {report.reason['rule']}: {report.reason['message']}")
        tally.rejected.append(key)
        return
    if report.bad_rows_key:
        print(f"  bad rows with reasons: {report.bad_rows_key}")
    if report.conflicts_key:
        print(f"  conflicting rows, stored and incoming values side by side: {report.conflicts_key}")
    elif report.conflicting:
        print("  conflicting rows replaced the stored ones (old values in reading_revisions)")
    tally.loaded.append(key)


def settled_keys(objects: Objects, settle: timedelta, tally: Tally) -> list[str]:
    """The keys waiting under incoming/ (incoming/maintenance/ aside: the maintenance_records asset's) that
    have stayed unchanged for `settle`: a file changed more recently is listed again once it would have
    settled, and left for the next run (counted in `tally`) when that second listing shows it changed."""
    listing = incoming.waiting(objects)
    now = datetime.now(UTC)
    young = [o for o in listing if not incoming.settled(o, now, settle)]
    if not young:
        return [o.key for o in listing]
    wait = max(settle - (now - o.last_modified) for o in young).total_seconds()
    print(
        f"{len(young)} file(s) changed in the last {settle.total_seconds():g}s: listing again in {wait:.1f}s"
    )
    time.sleep(max(wait, 0.0))
    before = {incoming.version(o) for o in listing}
    keys = []
    for obj in incoming.waiting(objects):
        if incoming.version(obj) in before:
            keys.append(obj.key)
        else:
            print(f"{obj.key}: left in {INCOMING}: it changed between two listings (still being written?)")
            tally.waiting.append(obj.key)
    return keys


def run(args: argparse.Namespace) -> int:
    if args.chunk_mb < 1:
        raise MfdError(f"--chunk-mb must be at least 1, got {args.chunk_mb}")
    outside = [k for k in args.keys if not k.startswith(INCOMING)]
    if outside:
        raise MfdError(f"keys must be under {INCOMING}: {', '.join(outside)}")
    settings = load_settings()
    engine = engine_from_settings(settings, args.database_url)
    objects = objects_from_settings(settings)
    tally = Tally()
    settle = objects.settle if args.settle_seconds is None else timedelta(seconds=args.settle_seconds)
    keys = args.keys or settled_keys(objects, settle, tally)
    if not keys and not tally.waiting:
        print(f"nothing under {INCOMING} in {objects.describe()}")
        return 0
    policy = args.conflict_policy or settings.conflict_policy
    for key in keys:
        ingest_one(objects, engine, key, args.chunk_mb << 20, tally, policy)
    print(tally.summary())
    return tally.status
