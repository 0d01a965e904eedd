"""Maintenance records from the simulation's own failures, the way a plant files them: late (each some
time after the failure it reports, at most `max_delay`) and incomplete (a `missing` share never filed).

A failure reading with a mode flag gets that mode as its outcome (the first set, in FAILURE_MODE_COLUMNS
order), one without a flag `rnf` (a random failure). The records are CSV for `incoming/maintenance/`
(`mfd.ingestion.maintenance`); with a label window of at least `max_delay`, each filed record labels the
failure reading it reports. `MaintenanceSink` collects a generator run's failures and files their records
as one CSV under `incoming/maintenance/` when the run ends (`mfd generate --maintenance`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, MAINTENANCE_COLUMNS
from mfd.storage.objects import INCOMING, Objects

# Where `mfd.ingestion.maintenance` reads maintenance files from (and readings ingestion leaves alone).
MAINTENANCE_PREFIX = f"{INCOMING}maintenance/"


def maintenance_records(
    readings: pd.DataFrame,
    seed: int,
    max_delay: timedelta = timedelta(hours=1),
    missing: float = 0.1,
    orders: str | None = None,
) -> pd.DataFrame:
    """One record per failure reading of `readings` (GENERATED_COLUMNS), `missing` of them left out,
    each dated a uniform 0..`max_delay` after its failure; columns MAINTENANCE_COLUMNS, by time. Work
    orders are `WO-<orders>-<n>` (`orders` default: the seed)."""
    _check(max_delay, missing)
    failed = readings[readings[LABEL_COLUMN].fillna(0).astype(bool)]
    modes = failed[list(FAILURE_MODE_COLUMNS)].fillna(0).astype(bool).to_numpy()
    outcome = np.where(modes.any(axis=1), np.array(FAILURE_MODE_COLUMNS)[modes.argmax(axis=1)], "rnf")
    failures = pd.DataFrame(
        {"machine_id": failed["machine_id"].to_numpy(), "timestamp": failed["timestamp"], "outcome": outcome}
    )
    return filed_records(failures, seed, max_delay, missing, orders)


def _check(max_delay: timedelta, missing: float) -> None:
    if not 0.0 <= missing <= 1.0:
        raise ValueError(f"missing must be a share in [0, 1], got {missing}")
    if max_delay < timedelta(0):
        raise ValueError(f"max_delay must not be negative, got {max_delay}")


def filed_records(
    failures: pd.DataFrame,
    seed: int,
    max_delay: timedelta = timedelta(0),
    missing: float = 0.0,
    orders: str | None = None,
) -> pd.DataFrame:
    """The records of `failures` (machine_id, timestamp, outcome; one row per failure) as a plant files
    them: `missing` of them left out, each dated a uniform 0..`max_delay` after its failure; columns
    MAINTENANCE_COLUMNS, by time. Work orders are `WO-<orders>-<n>` (`orders` default: the seed), n
    counting the failures in order."""
    _check(max_delay, missing)
    rng = np.random.default_rng(seed)
    delay = pd.to_timedelta(rng.uniform(0.0, max_delay.total_seconds(), len(failures)).round(), unit="s")
    filed = rng.random(len(failures)) >= missing
    records = pd.DataFrame(
        {
            "machine_id": failures["machine_id"].astype(str).to_numpy(),
            "timestamp": pd.DatetimeIndex(pd.to_datetime(failures["timestamp"], utc=True)) + delay,
            "outcome": failures["outcome"].to_numpy(),
            "work_order_id": [f"WO-{seed if orders is None else orders}-{i}" for i in range(len(failures))],
        }
    )[filed]
    return records.sort_values("timestamp", kind="stable").reset_index(drop=True)[list(MAINTENANCE_COLUMNS)]


def maintenance_csv(records: pd.DataFrame) -> bytes:
    """The records as a maintenance CSV file (ISO 8601 UTC times)."""
    out = records.assign(
        timestamp=pd.to_datetime(records["timestamp"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    )
    return out.to_csv(index=False).encode()


@dataclass
class MaintenanceSink:
    """Collects the failure readings of a generator run; `flush` files their records (late, some missing)
    as one CSV `incoming/maintenance/maintenance-<tag>.csv`, work orders named after the run's `tag`."""

    objects: Objects
    tag: str
    seed: int
    max_delay: timedelta
    missing: float

    def __post_init__(self) -> None:
        self.failures: list[pd.DataFrame] = []

    def add(self, chunk: pd.DataFrame) -> None:
        self.failures.append(chunk[chunk[LABEL_COLUMN].fillna(0).astype(bool)])

    def flush(self) -> int:
        """Write the records (none: no file); returns how many."""
        if not self.failures:
            return 0
        failed = pd.concat(self.failures)
        self.failures = []
        records = maintenance_records(failed, self.seed, self.max_delay, self.missing, orders=self.tag)
        if len(records):
            self.objects.put(f"{MAINTENANCE_PREFIX}maintenance-{self.tag}.csv", maintenance_csv(records))
        return len(records)


@dataclass
class FiledRecordsSink:
    """Files the records of a generator that keeps its failures itself (the generic fleet): when the run
    ends, `records(rows_written)` (the records of the failures among the readings written) as one CSV
    `incoming/maintenance/maintenance-<tag>.csv`."""

    objects: Objects
    tag: str
    records: Callable[[int], pd.DataFrame]

    def __post_init__(self) -> None:
        self.written = 0  # the readings' global row index after the last one written

    def add(self, chunk: pd.DataFrame) -> None:
        if len(chunk):
            self.written = int(chunk.index[-1]) + 1

    def flush(self) -> int:
        """Write the records (none: no file); returns how many."""
        records = self.records(self.written)
        if len(records):
            self.objects.put(f"{MAINTENANCE_PREFIX}maintenance-{self.tag}.csv", maintenance_csv(records))
        return len(records)
