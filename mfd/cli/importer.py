"""`mfd import cmapss [DIR] --subset FD001 [--split train|test]`: NASA C-MAPSS text files into readings CSVs
under the object store's incoming/ (and failure records under incoming/maintenance/), in the `cmapss`
profile's layout. The conversion is `mfd.profiles.cmapss_import`; this module stores its files."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError

from mfd.errors import MfdError, with_retries
from mfd.profiles import DEFAULT_PROFILE, ENV_VAR, ProfileError, load, resolve
from mfd.profiles.cmapss_import import DEFAULT_DIR, FILE_ROWS, SPLITS, Converted, convert
from mfd.settings import load_settings
from mfd.storage.connect import S3_SETTINGS, objects_from_settings
from mfd.storage.objects import INCOMING, Objects, S3Objects

PROFILE = "cmapss"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "import",
        help="convert NASA C-MAPSS text files into readings CSVs under incoming/",
        description="Convert a public dataset into readings CSV files under the object store's incoming/ "
        "prefix (S3 when MFD_S3_BUCKET is set, else a local directory), in its shipped profile's layout. "
        "See docs/profiles.md.",
    )
    datasets = parser.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    cmapss = datasets.add_parser(
        "cmapss",
        help="NASA C-MAPSS turbofan engines (train_/test_<subset>.txt) for MFD_PROFILE=cmapss",
        description="Convert NASA's C-MAPSS files (train_FD00x.txt / test_FD00x.txt: unit, cycle, 3 settings, "
        "21 sensors) into readings CSVs for the cmapss profile: engine <subset>-<split>-<unit:03d>, cycle 1 "
        "at 2020-01-01T00:00:00Z and one hour a cycle, numbers copied as written. The train split also gets "
        "one failure record per engine at its last cycle under incoming/maintenance/.",
    )
    cmapss.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        type=Path,
        default=DEFAULT_DIR,
        help="the directory holding NASA's files (default: FD001 as shipped in mfd/data/cmapss)",
    )
    cmapss.add_argument("--subset", default="FD001", help="FD001, FD002, FD003 or FD004 (default FD001)")
    cmapss.add_argument("--split", choices=SPLITS, default="train", help="train (default) or test")
    cmapss.add_argument(
        "--file-rows",
        type=int,
        default=FILE_ROWS,
        help=f"readings per CSV file at most, whole engines per file (default {FILE_ROWS:,})",
    )
    cmapss.set_defaults(func=run_cmapss)


def _put(objects: Objects, key: str, data: bytes) -> None:
    """Store one file, retrying while the store is unreachable (a retry rewrites the same key)."""
    with_retries(
        lambda: objects.put(key, data),
        what=objects.describe(),
        setting=S3_SETTINGS if isinstance(objects, S3Objects) else "MFD_HOME",
        retry_on=(OSError, BotoCoreError, ClientError),
    )


def summary(args: argparse.Namespace, converted: Converted, where: str, seconds: float) -> list[str]:
    """The lines printed at the end."""
    lines = [
        f"imported C-MAPSS {args.subset} {args.split}: {converted.engines:,} engines, {converted.rows:,} "
        f"readings in {len(converted.readings):,} CSV files under incoming/"
        + (
            f", {converted.engines:,} failure records in {len(converted.maintenance)} file under "
            "incoming/maintenance/"
            if converted.maintenance
            else ""
        )
        + f" -> {where} ({seconds:.2f} s)",
        *(f"  {INCOMING}{key}" for key, _ in (*converted.readings, *converted.maintenance)),
    ]
    if converted.rul is not None:
        lines.append(f"{converted.rul}: true remaining cycles per test engine, not imported (bench scoring)")
    if not _runs_cmapss():
        lines.append(f"ingest these with {ENV_VAR}={PROFILE} (they are the cmapss profile's readings)")
    return lines


def _runs_cmapss() -> bool:
    """Whether MFD_PROFILE selects the shipped cmapss profile (by name or by its file)."""
    try:
        return resolve(os.environ.get(ENV_VAR) or DEFAULT_PROFILE).resolve() == resolve(PROFILE).resolve()
    except ProfileError:
        return False


def run_cmapss(args: argparse.Namespace) -> int:
    if args.file_rows < 1:
        raise MfdError(f"--file-rows must be a positive number of readings per file (got {args.file_rows})")
    started = time.perf_counter()
    converted = convert(args.directory, args.subset, args.split, load(PROFILE), args.file_rows)
    objects = objects_from_settings(load_settings())
    for key, data in (*converted.readings, *converted.maintenance):
        _put(objects, f"{INCOMING}{key}", data)
    print("\n".join(summary(args, converted, objects.describe(), time.perf_counter() - started)))
    return 0
