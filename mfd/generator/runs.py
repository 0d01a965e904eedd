"""One generator run: a plan, the sinks it writes to (readings table, CSV files under incoming/), what it wrote.

The plan's profile picks the generator (`readings_of`): `ai4i` simulates the AI4I physics
(`mfd.generator.fleet`), `generic` any profile's sensors (`mfd.generator.generic`). Rows go into the
database in batches (one transaction each, duplicates skipped, retried while the database is unreachable)
in canonical names; files are buffered to `file_rows` readings, with their peripheral files and defects,
and written in the profile's source column names.
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
from functools import partial

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
from mfd.generator.generic import GenericFleet
from mfd.generator.maintenance import FiledRecordsSink, MaintenanceSink
from mfd.generator.mqtt import TOPIC_TEMPLATE, MqttPublisher, MqttTarget
from mfd.profiles import Profile, active
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
    profile: Profile = field(default_factory=active)  # its generator, and the CSV header's column names
    mqtt: MqttTarget | None = None  # the broker of --sink mqtt (`mfd.generator.mqtt`)

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
    published: int = 0  # MQTT messages the broker acknowledged
    interrupted: bool = False


class FileSink:
    """Buffers readings into CSV files of `file_rows`, with their peripheral files and injected defects."""

    def __init__(self, objects: Objects, plan: Plan, outcome: Outcome) -> None:
        self.objects, self.plan, self.outcome = objects, plan, outcome
        self.pending: list[pd.DataFrame] = []
        self.held = 0
        self.numbers = {INCOMING: 0, PERIPHERAL_PREFIX: 0}
        self.defect_rng = np.random.default_rng([plan.seed, 1])
        self.encode = partial(to_csv_bytes, names=plan.profile.source_names)

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
            self._put(self._key(INCOMING, "readings"), self.encode(rows))
            outcome.files += 1
            if plan.bad_rate > 0 and self.defect_rng.random() < plan.bad_rate:
                kind = FILE_DEFECTS[int(self.defect_rng.integers(len(FILE_DEFECTS)))]
                data = defect_file(readings, kind, int(self.defect_rng.integers(2**63)), self.encode)
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


def readings_of(plan: Plan) -> tuple[Iterator[pd.DataFrame], GenericFleet | None]:
    """The plan's readings, from its profile's generator: `ai4i` the AI4I physics, `generic` a
    GenericFleet (returned too: it keeps the failures its maintenance records are filed from)."""
    if plan.profile.generator == "generic":
        fleet = GenericFleet(plan.profile, plan.machines, plan.seed, plan.start, plan.interval_s)
        return fleet.readings(plan.rows), fleet
    return iter_readings(plan.machines, plan.rows, plan.seed, plan.start, plan.interval_s), None


@dataclass
class Sinks:
    """Where a run writes: the readings table, CSV files, maintenance records (each None when not asked)."""

    engine: Engine | None = None
    setting: str = "MFD_DATABASE_URL"
    files: FileSink | None = None
    records: MaintenanceSink | FiledRecordsSink | None = None
    mqtt: MqttPublisher | None = None
    places: list[str] = field(default_factory=list)


def open_sinks(plan: Plan, settings: Settings, outcome: Outcome, fleet: GenericFleet | None) -> Sinks:
    """The sinks the plan asks for, with their descriptions."""
    sinks = Sinks(setting="--database-url" if plan.database_url else "MFD_DATABASE_URL")
    if "db" in plan.sinks:
        sinks.engine = engine_from_settings(settings, plan.database_url, setting=sinks.setting)
        sinks.places.append(f"db {store.describe(str(sinks.engine.url))}")
    if "files" in plan.sinks or plan.peripheral:
        objects = objects_from_settings(settings)
        sinks.files = FileSink(objects, plan, outcome)
        sinks.places.append(f"files {objects.describe()}")
    if "mqtt" in plan.sinks and plan.mqtt is not None:
        sinks.mqtt = MqttPublisher(plan.mqtt, plan.profile)
        sinks.places.append(f"mqtt {plan.mqtt.url} ({TOPIC_TEMPLATE.format(machine='<machine>')}, QoS 1)")
    if plan.maintenance:
        objects = objects_from_settings(settings)
        if fleet is None:
            sinks.records = MaintenanceSink(
                objects, plan.tag, plan.seed, plan.maintenance_delay, plan.maintenance_missing
            )
        else:
            filed = partial(
                fleet.records,
                max_delay=plan.maintenance_delay,
                missing=plan.maintenance_missing,
                orders=plan.tag,
            )
            sinks.records = FiledRecordsSink(objects, plan.tag, filed)
        sinks.places.append(f"maintenance {objects.describe()}")
    return sinks


def execute(plan: Plan, settings: Settings) -> tuple[Outcome, list[str]]:
    """Generate and write; returns what was written and where (descriptions of the sinks)."""
    outcome = Outcome()
    readings, fleet = readings_of(plan)
    sinks = open_sinks(plan, settings, outcome, fleet)
    source = f"generator seed={plan.seed}"
    batch = max(1, round(plan.rate)) if plan.rate else plan.file_rows
    if plan.rate and sinks.mqtt is not None:  # a message stream: a tenth of a second's readings at a time
        batch = max(1, round(plan.rate / 10))
    period = batch / plan.rate if plan.rate else 0.0
    bar = tqdm(
        total=plan.rows,
        unit="row",
        unit_scale=True,
        disable=plan.quiet or not sys.stderr.isatty(),
        file=sys.stderr,
    )
    deadline = time.monotonic()
    with stop_on_ctrl_c() as stop:
        for chunk in rechunk(readings, batch):
            if sinks.engine is not None:
                outcome.inserted += insert(sinks.engine, chunk, source, sinks.setting)
            if sinks.files is not None:
                sinks.files.add(chunk)
            if sinks.records is not None:
                sinks.records.add(chunk)
            if sinks.mqtt is not None:
                outcome.published += sinks.mqtt.publish_frame(chunk)
            outcome.rows += len(chunk)
            bar.update(len(chunk))
            if plan.rate and not stop.is_set():
                deadline += period
                stop.wait(max(0.0, deadline - time.monotonic()))
            if stop.is_set():
                outcome.interrupted = True
                break
    bar.close()
    if sinks.mqtt is not None:
        sinks.mqtt.close()
    if sinks.files is not None:
        sinks.files.flush()
    if sinks.records is not None:
        outcome.maintenance_records = sinks.records.flush()
    return outcome, sinks.places
