"""The generic fleet generator: readings of any plant profile, without data (`generator: generic`).

Each machine gets a segment value (where the profile declares an attribute) and, per sensor, a healthy
baseline at 30-60 % of the sensor's physical range with Gaussian noise (2 % of the range). A machine runs
lives: each ends in a failure after a random number of readings, with a failure mode from the profile
(`failure` where it names none). From a random onset 1.5-3 horizons before the failure the mode's sensors
(a third of them, each with a fixed direction) drift from the baseline toward a limit near the end of their
range, growing with the square of the elapsed share, so the last horizon before a failure is learnable.
The failure is repaired at once: a maintenance record (outcome: the mode) at the failure reading's time,
and the machine restarts healthy. Lives last `horizon / POSITIVE_SHARE` on average, so a few % of readings
lie within the horizon before a failure.

Readings come in canonical names (`mfd.profiles.CANONICAL`): machine_id, timestamp (UTC), machine_type
(only with an attribute), the sensors, and machine_failure (only where the profile has a label column:
1 on the readings at most one horizon before a failure, the failure reading included; a failure after the
last reading generated still labels the readings before it, as the simulation knows it). Values always lie
inside the physical ranges. All of it is vectorised numpy over (time step, machine) blocks of a fixed size,
so the same seed gives the same readings and records whatever the consumer does with the blocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from mfd.generator.csv_encoding import to_csv_bytes
from mfd.generator.fleet import DEFAULT_START, machine_ids
from mfd.generator.maintenance import filed_records
from mfd.profiles import LABEL, MACHINE, SEGMENT, TIMESTAMP, Profile, active

POSITIVE_SHARE = 0.03  # long-run share of readings within the horizon before a failure
HORIZON_READINGS = 30  # the default interval puts this many readings of a machine in one horizon
BASELINE_BAND = (0.3, 0.6)  # healthy baselines, as shares of the physical range
NOISE_SHARE = 0.02  # noise sd, as a share of the range
LIMIT_SHARE = 0.05  # a drifting sensor heads for this share of the range short of its limit
ONSET_HORIZONS = (1.5, 3.0)  # degradation starts this many horizons before the failure
AMPLITUDE = (0.6, 1.0)  # per machine and sensor: how much of the way to the limit the drift goes
DRIFTING_SHARE = 1 / 3  # sensors each failure mode drifts
FAILURE = "failure"  # the outcome of a profile that names no failure modes
DEFAULT_ROWS = 10_000
BLOCK_ROWS = 65536  # rows per vectorised block; fixed so that output never depends on chunking


@dataclass(frozen=True)
class Generated:
    """A generic run: the readings (canonical names) and the maintenance records of their failures."""

    readings: pd.DataFrame
    records: pd.DataFrame


def default_interval_s(profile: Profile) -> float:
    """Seconds between two readings of a machine so that one horizon spans HORIZON_READINGS readings
    (C-MAPSS's 30 h: one hour, its cycle; the default 2 h: four minutes)."""
    return profile.horizon.total_seconds() / HORIZON_READINGS


def failure_outcomes(profile: Profile) -> tuple[str, ...]:
    """The outcomes a failure record can name: the profile's failure modes, else `failure`."""
    return profile.failure_modes or (FAILURE,)


def _decimals(span: float) -> int:
    """Decimals that keep about four significant digits of a sensor's range."""
    return max(0, 4 - math.ceil(math.log10(span))) if span > 0 else 4


class GenericFleet:
    """The state of every machine of a generic fleet, advanced a block of time steps at a time."""

    def __init__(
        self, profile: Profile, machines: int, seed: int, start: datetime, interval_s: float
    ) -> None:
        if machines < 1:
            raise ValueError(f"machines must be >= 1, got {machines}")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.profile, self.machines, self.seed = profile, machines, seed
        self.rng = rng = np.random.default_rng([seed, 0x9E7E])
        self.ids = np.array(machine_ids(machines), dtype=object)
        self.segments = (
            np.array(profile.segments, dtype=object)[rng.integers(0, len(profile.segments), machines)]
            if profile.segment_column
            else None
        )
        self._sensors(rng)
        self.interval_ns = round(interval_s * 1e6) * 1000
        self.horizon_steps = profile.horizon.value / self.interval_ns
        self.mean_life = max(self.horizon_steps / POSITIVE_SHARE, ONSET_HORIZONS[1] * self.horizon_steps + 2)
        life, self.onset, self.mode = self._new_lives(machines)
        # Machines start part-way through their first life, so failures come from the first readings on.
        self.fail_at = np.floor(rng.random(machines) * life).astype(np.int64)
        start_ts = pd.Timestamp(start)
        start_ns = (
            start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
        ).value
        self.clock_ns = (
            start_ns + np.floor(rng.random(machines) * interval_s * 1000).astype(np.int64) * 1_000_000
        )
        self.step = 0
        self.failed: list[pd.DataFrame] = []  # the failures of the readings generated, by row

    def _sensors(self, rng: np.random.Generator) -> None:
        """Ranges, per-machine baselines and noise, and which sensors each failure mode drifts, and where."""
        sensors, m = self.profile.sensors, self.machines
        self.low = np.array([s.min for s in sensors])
        self.high = np.array([s.max for s in sensors])
        span = self.high - self.low
        n = len(sensors)
        self.baseline = self.low + span * rng.uniform(*BASELINE_BAND, (m, n))
        self.noise_sd = span * NOISE_SHARE * rng.uniform(0.7, 1.3, (m, n))
        upward = rng.random(n) < 0.5
        self.target = np.where(upward, self.high - span * LIMIT_SHARE, self.low + span * LIMIT_SHARE)
        self.amplitude = rng.uniform(*AMPLITUDE, (m, n))
        modes = failure_outcomes(self.profile)
        drifting = max(1, math.ceil(n * DRIFTING_SHARE))
        self.drifts = np.zeros((len(modes), n), dtype=bool)
        for i in range(len(modes)):
            self.drifts[i, rng.permutation(n)[:drifting]] = True
        self.decimals = [_decimals(float(s)) for s in span]

    def _new_lives(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Readings each new life lasts up to its failure reading, its degradation onset (readings before
        the failure) and its failure mode (index into failure_outcomes)."""
        rng = self.rng
        onset = self.horizon_steps * rng.uniform(*ONSET_HORIZONS, n)
        floor = np.ceil(onset).astype(np.int64) + 1
        life = np.maximum(floor, np.round(rng.gamma(4.0, self.mean_life / 4.0, n)).astype(np.int64))
        mode = rng.integers(0, len(failure_outcomes(self.profile)), n)
        return life, onset, mode

    def _lives(self, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, pd.DataFrame]:
        """Per (step, machine): readings left to the failure, the life's onset and mode; and the failures
        (row, machine, mode) inside the block."""
        m = self.machines
        ends = np.zeros((steps + 1, m), dtype=bool)
        onset_at = np.empty((steps + 1, m))
        mode_at = np.empty((steps + 1, m), dtype=np.int64)
        events: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        fail_at = self.fail_at
        while (due := np.flatnonzero(fail_at < steps)).size:
            rows = fail_at[due]
            ends[rows, due] = True
            onset_at[rows, due], mode_at[rows, due] = self.onset[due], self.mode[due]
            events.append((rows, due, self.mode[due]))
            life, self.onset[due], self.mode[due] = self._new_lives(due.size)
            fail_at[due] = rows + life
        onset_at[steps], mode_at[steps] = self.onset, self.mode
        index = np.arange(steps + 1)[:, None]
        upcoming = np.minimum.accumulate(np.where(ends, index, steps)[::-1], axis=0)[::-1][:steps]
        fail_row = np.where(upcoming < steps, upcoming, fail_at[None, :])
        left = fail_row - index[:steps]
        onset = np.take_along_axis(onset_at, upcoming, axis=0)
        mode = np.take_along_axis(mode_at, upcoming, axis=0)
        self.fail_at = fail_at - steps
        if events:
            rows, machines, modes = (np.concatenate(parts) for parts in zip(*events, strict=True))
        else:
            rows = machines = modes = np.empty(0, dtype=np.int64)
        failures = pd.DataFrame({"row": rows, "machine": machines, "mode": modes})
        return left, onset, mode, failures

    def advance(self, steps: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Readings of every machine for the next `steps` time steps (ordered by step, then machine), and
        the failures among them (`row`: position in the readings, `machine_id`, `timestamp`, `outcome`)."""
        m, n = self.machines, len(self.profile.sensors)
        left, onset, mode, failures = self._lives(steps)
        severity = np.clip(1.0 - left / onset, 0.0, 1.0) ** 2
        pull = (self.target - self.baseline) * self.amplitude  # (machines, sensors)
        noise = self.rng.standard_normal((steps, m, n)) * self.noise_sd
        values = self.baseline + severity[..., None] * self.drifts[mode] * pull + noise
        ns = self.clock_ns + (self.step + np.arange(steps, dtype=np.int64))[:, None] * self.interval_ns
        self.step += steps
        columns: dict[str, object] = {
            MACHINE: np.broadcast_to(self.ids, (steps, m)).ravel(),
            TIMESTAMP: pd.DatetimeIndex(ns.ravel(), tz="UTC"),
        }
        if self.segments is not None:
            columns[SEGMENT] = np.broadcast_to(self.segments, (steps, m)).ravel()
        for k, sensor in enumerate(self.profile.sensors):
            column = np.round(values[:, :, k], self.decimals[k])
            columns[sensor.name] = np.clip(column, sensor.min, sensor.max).ravel()
        if self.profile.label_column:
            columns[LABEL] = (left * self.interval_ns <= self.profile.horizon.value).ravel().astype(np.int8)
        at = failures["row"].to_numpy() * m + failures["machine"].to_numpy()
        events = pd.DataFrame(
            {
                "row": at,
                MACHINE: self.ids[failures["machine"].to_numpy()].astype(str),
                TIMESTAMP: pd.DatetimeIndex(ns.ravel()[at], tz="UTC"),
                "outcome": np.array(failure_outcomes(self.profile), dtype=object)[
                    failures["mode"].to_numpy()
                ],
            }
        ).sort_values("row", kind="stable")
        return pd.DataFrame(columns), events.reset_index(drop=True)

    def readings(self, rows: int | None) -> Iterator[pd.DataFrame]:
        """`rows` readings (endless when None) in blocks with a global row index; their failures are
        kept (`failures`) for the records."""
        if rows is not None and rows < 0:
            raise ValueError(f"rows must be >= 0, got {rows}")
        steps_per_block = max(1, BLOCK_ROWS // self.machines)
        done = 0
        while rows is None or done < rows:
            left = steps_per_block * self.machines if rows is None else rows - done
            block, failures = self.advance(min(steps_per_block, -(-left // self.machines)))
            block = block.iloc[:left]
            block.index = pd.RangeIndex(done, done + len(block))
            failures = failures[failures["row"] < len(block)]
            self.failed.append(failures.assign(row=failures["row"] + done))
            done += len(block)
            yield block

    def records(
        self,
        before_row: int | None = None,
        max_delay: timedelta = timedelta(0),
        missing: float = 0.0,
        orders: str | None = None,
    ) -> pd.DataFrame:
        """Maintenance records (MAINTENANCE_COLUMNS, by time) of the failures among the readings generated
        so far (those before row `before_row`): by default one per failure, at its time; `max_delay` and
        `missing` file them late and incompletely as `mfd.generator.maintenance` does. Work orders are
        `WO-<orders>-<n>` (default: the seed)."""
        failed = pd.concat(self.failed) if self.failed else self.advance(0)[1]
        if before_row is not None:
            failed = failed[failed["row"] < before_row]
        return filed_records(failed, self.seed, max_delay, missing, orders)


def generate_generic(
    profile: Profile | None = None,
    machines: int = 10,
    rows: int | None = None,
    seed: int = 0,
    start: datetime | None = None,
    interval_s: float | None = None,
    duration: timedelta | None = None,
) -> Generated:
    """A generic fleet's readings and maintenance records (one per failure, at its time).

    `profile`: default the active one. Size: `rows` readings in all, or every machine reading for
    `duration` (default 10,000 rows). `interval_s`: seconds between two readings of a machine (default
    `default_interval_s`). Same arguments, same frames."""
    profile = profile or active()
    interval = interval_s or default_interval_s(profile)
    if rows is None:
        rows = machines * math.ceil(duration.total_seconds() / interval) if duration else DEFAULT_ROWS
    fleet = GenericFleet(profile, machines, seed, start or DEFAULT_START, interval)
    blocks = list(fleet.readings(rows))
    readings = pd.concat(blocks) if blocks else fleet.advance(0)[0]
    return Generated(readings, fleet.records())


def readings_csv(readings: pd.DataFrame, profile: Profile | None = None) -> bytes:
    """Readings in canonical names as a CSV file in `profile`'s source column names (default: the active
    profile's), in the layout `incoming/` reads (`to_csv_bytes`)."""
    return to_csv_bytes(readings, names=(profile or active()).source_names)
