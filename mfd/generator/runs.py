"""One generator run: a plan, the sinks it writes to (readings table, CSV files under incoming/), what it wrote.

Rows go into the database in batches (one transaction each, duplicates skipped, retried while the database
is unreachable); files are buffered to `file_rows` readings, with their peripheral files and defects.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import InterfaceError, OperationalError
from tqdm import tqdm

from mfd.errors import with_retries
from mfd.generator import (
    FILE_DEFECTS,
    ROW_DEFECTS,
    defect_file,
    generate_peripheral,
    inject_defects,
    iter_readings,
    rechunk,
    to_csv_bytes,
)
from mfd.generator.maintenance import MaintenanceSink
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.connect import S3_SETTINGS, engine_from_settings, objects_from_settings
from mfd.storage.objects import INCOMING, PERIPHERAL_PREFIX, Objects, S3Objects


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
    maintenance: bool = False  # also file maintenance records of the failures under incoming/maintenance/
    maintenance_delay: timedelta = timedelta(hours=1)
    maintenance_missing: float = 0.1

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
    maintenance_records: int = 0
    interrupted: bool = False


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


def execute(plan: Plan, settings: Settings) -> tuple[Outcome, list[str]]:
    """Generate and write; returns what was written and where (descriptions of the sinks)."""
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
    records = None
    if plan.maintenance:
        objects = objects_from_settings(settings)
        records = MaintenanceSink(
            objects, plan.tag, plan.seed, plan.maintenance_delay, plan.maintenance_missing
        )
        places.append(f"maintenance {objects.describe()}")
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
            if records is not None:
                records.add(chunk)
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
    if records is not None:
        outcome.maintenance_records = records.flush()
    return outcome, places
