"""`mfd generate`: a simulated fleet's readings into the readings table and/or CSV files under incoming/."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from tqdm import tqdm

from mfd.errors import MfdError, with_retries
from mfd.generator.fleet import (
    FILE_DEFECTS,
    ROW_DEFECTS,
    defect_file,
    generate_peripheral,
    inject_defects,
    iter_readings,
    rechunk,
    to_csv_bytes,
)
from mfd.settings import load_settings
from mfd.storage import readings as store
from mfd.storage.connect import S3_SETTINGS, engine_from_settings, objects_from_settings
from mfd.storage.objects import INCOMING, Objects, S3Objects

SINKS: tuple[str, ...] = ("db", "files")
DEFAULT_ROWS = 10_000
DEFAULT_INTERVAL_S = 60.0
DEFAULT_FILE_ROWS = 10_000
PERIPHERAL_PREFIX = f"{INCOMING}peripheral/"


@dataclass(frozen=True)
class Plan:
    """Validated options of one `mfd generate` run."""

    machines: int
    rows: int | None  # None: until interrupted (only with a rate)
    seed: int
    start: datetime
    interval_s: float
    rate: float | None
    sinks: frozenset[str]
    file_rows: int
    peripheral: bool
    bad_rate: float
    database_url: str | None
    quiet: bool

    @property
    def tag(self) -> str:
        """Names this run's files: the same start and seed give the same keys, never a second copy."""
        return f"{self.start:%Y%m%dT%H%M%S}Z-s{self.seed}"


@dataclass
class Outcome:
    """What a run wrote, for the summary line."""

    rows: int = 0
    inserted: int = 0
    files: int = 0
    peripheral_rows: int = 0
    peripheral_files: int = 0
    defects: dict[str, int] = field(default_factory=lambda: dict.fromkeys((*ROW_DEFECTS, *FILE_DEFECTS), 0))
    interrupted: bool = False


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="simulate a fleet of machines: readings into the database and/or CSV files under incoming/",
        description="Simulate N machines emitting readings with the AI4I 2020 physics (deterministic for a "
        "seed). Readings go to the readings table (--sink db: MFD_DATABASE_URL or SQLite under MFD_HOME) "
        "and/or as CSV files into the object store's incoming/ prefix (--sink files: S3 when MFD_S3_BUCKET "
        "is set, else a local directory). See docs/generator.md.",
    )
    parser.add_argument("--machines", type=int, default=10, help="machines in the fleet (default 10)")
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
        help=f"seconds between two readings of one machine (default {DEFAULT_INTERVAL_S:g}; with --rate: "
        "machines / rate, so timestamps follow the wall clock)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: same options, same readings (default 0)"
    )
    parser.add_argument(
        "--sink",
        action="append",
        metavar="{db,files}",
        help="db: the readings table; files: CSV files under incoming/. Repeat for both (default db)",
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
        f"CSV files under {PERIPHERAL_PREFIX}",
    )
    parser.add_argument(
        "--bad-rate",
        type=float,
        default=0.0,
        help="share of malformed rows (and extra malformed files) in the CSV files, to test validation "
        "(needs --sink files; the database gets clean rows). Default 0",
    )
    parser.add_argument(
        "--start", help="time of the first reading, ISO 8601 (UTC unless a zone is given); default now"
    )
    parser.add_argument("--database-url", help="readings database URL (overrides MFD_DATABASE_URL)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


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
    sinks = frozenset(args.sink or ["db"])
    unknown = sorted(sinks - set(SINKS))
    if unknown:
        raise MfdError(f"--sink {unknown[0]!r} is not a sink: use --sink db and/or --sink files")
    if args.bad_rate > 0 and "files" not in sinks:
        raise MfdError("--bad-rate needs --sink files: the database refuses malformed rows")
    interval = args.interval or (args.machines / args.rate if args.rate else DEFAULT_INTERVAL_S)
    if args.rows is not None:
        rows = args.rows
    elif args.duration is not None:
        rows = args.machines * math.ceil(args.duration / interval)
    else:
        rows = None if args.rate else DEFAULT_ROWS
    return Plan(
        machines=args.machines,
        rows=rows,
        seed=args.seed,
        start=parse_start(args.start),
        interval_s=interval,
        rate=args.rate,
        sinks=sinks,
        file_rows=args.file_rows or (max(1, round(args.rate * 60)) if args.rate else DEFAULT_FILE_ROWS),
        peripheral=args.peripheral,
        bad_rate=args.bad_rate,
        database_url=args.database_url,
        quiet=args.quiet,
    )


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


class FileSink:
    """Buffers readings into CSV files of `file_rows`, with their peripheral files and injected defects."""

    def __init__(self, objects: Objects, plan: Plan, outcome: Outcome) -> None:
        self.objects, self.plan, self.outcome = objects, plan, outcome
        self.pending: list[pd.DataFrame] = []
        self.held = 0
        self.numbers = {INCOMING: 0, PERIPHERAL_PREFIX: 0}
        self.defect_rng = np.random.default_rng([plan.seed, 1])

    def add(self, chunk: pd.DataFrame) -> None:
        self.pending.append(chunk)
        self.held += len(chunk)
        if self.held >= self.plan.file_rows:
            for part in rechunk(iter(self.pending), self.plan.file_rows):
                if len(part) < self.plan.file_rows:
                    self.pending, self.held = [part], len(part)
                    return
                self._write(part)
            self.pending, self.held = [], 0

    def flush(self) -> None:
        if self.held:
            self._write(pd.concat(self.pending))
        self.pending, self.held = [], 0

    def _key(self, prefix: str, kind: str) -> str:
        self.numbers[prefix] += 1
        return f"{prefix}{kind}-{self.plan.tag}-{self.numbers[prefix]:06d}.csv"

    def _put(self, key: str, data: bytes) -> None:
        """Store one file, retrying while the store is unreachable (a retry rewrites the same key)."""
        with_retries(
            lambda: self.objects.put(key, data),
            what=self.objects.describe(),
            setting=S3_SETTINGS if isinstance(self.objects, S3Objects) else "MFD_HOME",
            retry_on=(OSError, BotoCoreError, ClientError),
        )

    def _write(self, readings: pd.DataFrame) -> None:
        plan, outcome = self.plan, self.outcome
        if "files" in plan.sinks:
            rows = readings
            if plan.bad_rate > 0:
                rows, counts = inject_defects(readings, plan.bad_rate, int(self.defect_rng.integers(2**63)))
                for kind, n in counts.items():
                    outcome.defects[kind] += n
            self._put(self._key(INCOMING, "readings"), to_csv_bytes(rows))
            outcome.files += 1
            if plan.bad_rate > 0 and self.defect_rng.random() < plan.bad_rate:
                kind = FILE_DEFECTS[int(self.defect_rng.integers(len(FILE_DEFECTS)))]
                data = defect_file(readings, kind, int(self.defect_rng.integers(2**63)))
                self._put(self._key(INCOMING, "readings"), data)
                outcome.defects[kind] += 1
                outcome.files += 1
        devices = generate_peripheral(readings, plan.seed, plan.interval_s) if plan.peripheral else None
        if devices is not None and len(devices):
            self._put(self._key(PERIPHERAL_PREFIX, "peripheral"), to_csv_bytes(devices))
            outcome.peripheral_rows += len(devices)
            outcome.peripheral_files += 1


@contextmanager
def stop_on_ctrl_c() -> Iterator[threading.Event]:
    """An event set by Ctrl-C, so a batch is never half written (main thread only; elsewhere never set)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def insert(engine: Engine, chunk: pd.DataFrame, source: str, setting: str) -> int:
    """Insert one batch, retrying while the database is unreachable: a batch is one transaction and
    duplicates are skipped, so a retry never writes a reading twice."""
    return with_retries(
        lambda: store.insert_readings(engine, chunk, source),
        what=f"readings database {store.describe(str(engine.url))}",
        setting=setting,
        retry_on=(OperationalError, InterfaceError),
    )


def execute(plan: Plan) -> tuple[Outcome, list[str]]:
    """Generate and write; returns what was written and where (descriptions of the sinks)."""
    settings = load_settings()
    outcome = Outcome()
    places: list[str] = []
    engine = None
    setting = "--database-url" if plan.database_url else "MFD_DATABASE_URL"
    if "db" in plan.sinks:
        engine = engine_from_settings(settings, plan.database_url, setting=setting)
        places.append(f"db {store.describe(str(engine.url))}")
    files = None
    if "files" in plan.sinks or plan.peripheral:
        objects = objects_from_settings(settings)
        files = FileSink(objects, plan, outcome)
        places.append(f"files {objects.describe()}")
    source = f"generator seed={plan.seed}"
    batch = max(1, round(plan.rate)) if plan.rate else plan.file_rows
    period = batch / plan.rate if plan.rate else 0.0
    bar = tqdm(
        total=plan.rows,
        unit="row",
        unit_scale=True,
        disable=plan.quiet or not sys.stderr.isatty(),
        file=sys.stderr,
    )
    deadline = time.monotonic()
    readings = iter_readings(plan.machines, plan.rows, plan.seed, plan.start, plan.interval_s)
    with stop_on_ctrl_c() as stop:
        for chunk in rechunk(readings, batch):
            if engine is not None:
                outcome.inserted += insert(engine, chunk, source, setting)
            if files is not None:
                files.add(chunk)
            outcome.rows += len(chunk)
            bar.update(len(chunk))
            if plan.rate and not stop.is_set():
                deadline += period
                stop.wait(max(0.0, deadline - time.monotonic()))
            if stop.is_set():
                outcome.interrupted = True
                break
    bar.close()
    if files is not None:
        files.flush()
    return outcome, places


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
    if plan.peripheral:
        parts.append(
            f"{outcome.peripheral_rows:,} peripheral rows in {_count(outcome.peripheral_files, 'file')}"
        )
    if plan.bad_rate > 0:
        parts.append("defects " + " ".join(f"{k}={v}" for k, v in outcome.defects.items()))
    return "generated " + "; ".join(parts) + " -> " + ", ".join(places)


def run(args: argparse.Namespace) -> int:
    plan = plan_from_args(args)
    started = time.perf_counter()
    outcome, places = execute(plan)
    print(summary(plan, outcome, places, time.perf_counter() - started))
    return 0
