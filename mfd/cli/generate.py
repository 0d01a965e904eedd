"""`mfd generate`: a simulated fleet's readings into the readings table and/or CSV files under incoming/."""

from __future__ import annotations

import argparse
import math
import os
import time
from datetime import UTC, datetime, timedelta

import pandas as pd

from mfd.errors import MfdError
from mfd.generator.generic import default_interval_s
from mfd.generator.mqtt import MqttTarget
from mfd.generator.runs import Outcome, Plan, execute
from mfd.profiles import Profile, active
from mfd.settings import load_settings
from mfd.storage.objects import INCOMING, PERIPHERAL_PREFIX

SINKS: tuple[str, ...] = ("db", "files", "mqtt")
DEFAULT_ROWS = 10_000
DEFAULT_INTERVAL_S = 60.0
DEFAULT_FILE_ROWS = 10_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="simulate a fleet of machines: readings into the database and/or CSV files under incoming/",
        description="Simulate N machines emitting readings of the active profile (MFD_PROFILE) with its "
        "generator: the AI4I 2020 physics for ai4i, the generic fleet (per-machine drift toward failure "
        "on the profile's sensors) for any other; deterministic for a seed. Readings go to the readings "
        "table (--sink db: MFD_DATABASE_URL or SQLite under MFD_HOME) "
        "and/or as CSV files into the object store's incoming/ prefix (--sink files: S3 when MFD_S3_BUCKET "
        "is set, else a local directory). See docs/generator.md.",
    )
    parser.add_argument("--machines", type=int, default=10, help="machines in the fleet (default 10)")
    _add_timing_options(parser)
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: same options, same readings (default 0)"
    )
    _add_output_options(parser)
    parser.add_argument(
        "--start",
        help="time of the first reading, ISO 8601 (UTC unless a zone is given); default: the history ends "
        "now (with --rate: it starts now and follows the clock)",
    )
    add_maintenance_options(parser)
    parser.add_argument("--database-url", help="readings database URL (overrides MFD_DATABASE_URL)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _add_timing_options(parser: argparse.ArgumentParser) -> None:
    """How many readings, how fast, how far apart."""
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--rows", type=int, help=f"readings in total, all machines (default {DEFAULT_ROWS:,} without --rate)"
    )
    size.add_argument(
        "--duration", type=float, help="seconds of machine time: every machine reads every --interval seconds"
    )
    parser.add_argument(
        "--rate",
        type=float,
        help="rows per second, written in one batch a second in real time (--rate 1: one reading a second); "
        "without --rows/--duration it runs until Ctrl-C. Default: as fast as possible",
    )
    parser.add_argument(
        "--interval",
        type=float,
        help=f"seconds between two readings of one machine (default {DEFAULT_INTERVAL_S:g} for ai4i, the "
        "profile's horizon / 30 for a generic profile; with --rate: machines / rate, so timestamps follow "
        "the wall clock)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """Where the readings go (--sink and its options), peripheral devices, malformed rows."""
    parser.add_argument(
        "--sink",
        action="append",
        metavar="{db,files,mqtt}",
        help="db: the readings table; files: CSV files under incoming/; mqtt: one JSON message per reading "
        "on plant/<machine>/readings (QoS 1) to --mqtt-url, for `mfd stream`. Repeat for several (default db)",
    )
    parser.add_argument(
        "--mqtt-url",
        default=os.environ.get("MFD_MQTT_URL", "mqtt://127.0.0.1:1883"),
        help="broker of --sink mqtt, mqtt://host:port (MFD_MQTT_URL; account: MFD_MQTT_USERNAME and "
        "MFD_MQTT_PASSWORD)",
    )
    parser.add_argument(
        "--file-rows",
        type=int,
        help=f"readings per CSV file (default {DEFAULT_FILE_ROWS:,}; with --rate: one minute of rows)",
    )
    parser.add_argument(
        "--peripheral",
        action="store_true",
        help="also write the machines' peripheral devices (power meter, vibration, ambient temperature) as "
        f"CSV files under {PERIPHERAL_PREFIX} (ai4i only)",
    )
    parser.add_argument(
        "--bad-rate",
        type=float,
        default=0.0,
        help="share of malformed rows (and extra malformed files) in the CSV files, to test validation "
        "(needs --sink files; the database gets clean rows). Default 0",
    )


def add_maintenance_options(parser: argparse.ArgumentParser) -> None:
    """--maintenance and how its records are filed (late, some missing)."""
    parser.add_argument(
        "--maintenance",
        action="store_true",
        help="also file maintenance records of the simulated failures as one CSV under "
        "incoming/maintenance/ (late, some missing), for maintenance_records to ingest; a profile without "
        "a label column gets its labels from them",
    )
    parser.add_argument(
        "--maintenance-delay",
        type=float,
        default=3600.0,
        help="most seconds a record is filed after its failure (uniform from 0; default 3600)",
    )
    parser.add_argument(
        "--maintenance-missing-share",
        type=float,
        default=0.1,
        help="share of failures never filed (default 0.1)",
    )


def plan_from_args(args: argparse.Namespace) -> Plan:
    """Check every option; an MfdError names the one to fix."""
    if args.machines < 1:
        raise MfdError(f"--machines must be at least 1 (got {args.machines})")
    for option, value in (
        ("--rate", args.rate),
        ("--interval", args.interval),
        ("--duration", args.duration),
    ):
        if value is not None and not value > 0:
            raise MfdError(f"{option} must be a positive number of {'rows/s' if option == '--rate' else 's'}")
    if args.rows is not None and args.rows < 1:
        raise MfdError(f"--rows must be a positive number of readings (got {args.rows})")
    if args.file_rows is not None and args.file_rows < 1:
        raise MfdError(f"--file-rows must be a positive number of readings per file (got {args.file_rows})")
    if not 0.0 <= args.bad_rate <= 1.0:
        raise MfdError(f"--bad-rate must be a share between 0 and 1 (got {args.bad_rate})")
    if not 0.0 <= args.maintenance_missing_share <= 1.0:
        raise MfdError(
            f"--maintenance-missing-share must be a share between 0 and 1 (got {args.maintenance_missing_share})"
        )
    if args.maintenance_delay < 0:
        raise MfdError(f"--maintenance-delay must not be negative (got {args.maintenance_delay})")
    sinks = frozenset(args.sink or ["db"])
    unknown = sorted(sinks - set(SINKS))
    if unknown:
        raise MfdError(f"--sink {unknown[0]!r} is not a sink: use --sink db, files and/or mqtt")
    if args.bad_rate > 0 and "files" not in sinks:
        raise MfdError("--bad-rate needs --sink files: the database refuses malformed rows")
    profile = active()
    interval = args.interval or (args.machines / args.rate if args.rate else default_interval(profile))
    if args.peripheral and profile.generator != "ai4i":
        raise MfdError(
            f"--peripheral simulates the ai4i machines' devices; profile {profile.name} uses the "
            f"{profile.generator} generator, which has none"
        )
    if args.rows is not None:
        rows = args.rows
    elif args.duration is not None:
        rows = args.machines * math.ceil(args.duration / interval)
    else:
        rows = None if args.rate else DEFAULT_ROWS
    start = parse_start(args.start)
    if args.start is None and rows is not None and not args.rate:
        start = ending_now(start, rows, args.machines, interval)
    return Plan(
        machines=args.machines,
        rows=rows,
        seed=args.seed,
        start=start,
        interval_s=interval,
        rate=args.rate,
        sinks=sinks,
        file_rows=args.file_rows or (max(1, round(args.rate * 60)) if args.rate else DEFAULT_FILE_ROWS),
        peripheral=args.peripheral,
        bad_rate=args.bad_rate,
        database_url=args.database_url,
        quiet=args.quiet,
        maintenance=args.maintenance,
        maintenance_delay=timedelta(seconds=args.maintenance_delay),
        maintenance_missing=args.maintenance_missing_share,
        profile=profile,
        mqtt=_mqtt_target(args) if "mqtt" in sinks else None,
    )


def _mqtt_target(args: argparse.Namespace) -> MqttTarget:
    target = MqttTarget(
        args.mqtt_url, os.environ.get("MFD_MQTT_USERNAME"), os.environ.get("MFD_MQTT_PASSWORD")
    )
    target.address()  # a malformed URL: MfdError now, not after the fleet started
    return target


def default_interval(profile: Profile) -> float:
    """Seconds between two readings of a machine without --interval or --rate: a minute for ai4i; for a
    generic profile, its horizon over 30 (so a horizon holds 30 readings of a machine; C-MAPSS: 1 h)."""
    return DEFAULT_INTERVAL_S if profile.generator == "ai4i" else default_interval_s(profile)


def ending_now(now: datetime, rows: int, machines: int, interval_s: float) -> datetime:
    """The first reading's time for a history whose last reading lies at `now` (a plant's past, never
    its future; each machine reads at its own offset within the first interval)."""
    return now - timedelta(seconds=math.ceil(rows / machines) * interval_s)


def parse_start(text: str | None) -> datetime:
    """`--start` as an aware UTC datetime; now (whole seconds) when not given."""
    if text is None:
        return datetime.now(UTC).replace(microsecond=0)
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise MfdError(f"--start {text!r} is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z") from exc
    if pd.isna(ts):
        raise MfdError(f"--start {text!r} is not an ISO 8601 time, e.g. 2026-01-01T00:00:00Z")
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def summary(plan: Plan, outcome: Outcome, places: list[str], seconds: float) -> str:
    """The one line printed at the end."""
    parts = [
        f"{outcome.rows:,} readings from {plan.machines:,} machines in {seconds:.2f} s "
        f"({outcome.rows / max(seconds, 1e-9):,.0f} rows/s)"
        + (" (interrupted)" if outcome.interrupted else "")
    ]
    if "db" in plan.sinks:
        skipped = outcome.rows - outcome.inserted
        parts.append(f"{outcome.inserted:,} new rows" + (f" ({skipped:,} already stored)" if skipped else ""))
    if "files" in plan.sinks:
        parts.append(f"{_count(outcome.files, 'CSV file')} under {INCOMING}")
    if "mqtt" in plan.sinks:
        parts.append(f"{_count(outcome.published, 'MQTT message')} acknowledged")
    if plan.peripheral:
        parts.append(
            f"{outcome.peripheral_rows:,} peripheral rows in {_count(outcome.peripheral_files, 'file')}"
        )
    if plan.maintenance:
        parts.append(
            f"{_count(outcome.maintenance_records, 'maintenance record')} under incoming/maintenance/"
        )
    if plan.bad_rate > 0:
        parts.append("defects " + " ".join(f"{k}={v}" for k, v in outcome.defects.items()))
    return "generated " + "; ".join(parts) + " -> " + ", ".join(places)


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    started = time.perf_counter()
    outcome, places = execute(plan, load_settings())
    print(summary(plan, outcome, places, time.perf_counter() - started))
    return 0
