"""A simulated fleet emitting readings with the AI4I 2020 physics.

Every machine is its own time series: a fixed type, its own air/process temperature walk, its own tool
(wear grows 2/3/5 min per reading for L/M/H and the tool is changed at 198-253 min) and its own clock.
Failure modes follow the rules the AI4I file obeys exactly (see mfd/data/README.md); all of it is
vectorised numpy over (time step, machine) blocks and deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import numpy as np
import pandas as pd

from mfd.schema import (
    FAILURE_MODE_COLUMNS,
    LABEL_COLUMN,
    MACHINE_TYPES,
    READING_COLUMNS,
)

GENERATED_COLUMNS: tuple[str, ...] = (*READING_COLUMNS, *FAILURE_MODE_COLUMNS)
DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)

TYPE_SHARES: dict[str, float] = {"L": 0.6, "M": 0.3, "H": 0.1}
WEAR_STEP_MIN: dict[str, int] = {"L": 2, "M": 3, "H": 5}
OSF_LIMIT_MIN_NM: dict[str, float] = {"L": 11000.0, "M": 12000.0, "H": 13000.0}

AIR_MEAN_K, AIR_SD_K, AIR_STEP_SD_K = 300.0, 2.0, 0.068
DIFF_MEAN_K, DIFF_SD_K, DIFF_STEP_SD_K = 10.0, 1.0, 0.042
TORQUE_MEAN_NM, TORQUE_SD_NM = 40.0, 10.0
# speed = base + power / (angular speed per rpm * (torque + offset)) + noise; fitted to AI4I with the
# power fixed at 2860 W: mean 1539 rpm, sd 180, correlation with torque -0.87.
SPEED_POWER_W, SPEED_BASE_RPM, SPEED_TORQUE_OFFSET_NM, SPEED_NOISE_RPM = 2860.0, 907.5, 5.73, 54.0
TOOL_CHANGE_MIN = (198, 253)
TWF_SHARE_OF_CHANGES = 0.4  # AI4I: 46 TWF labels over 119 tool changes
RNF_RATE = 0.001

HDF_DIFF_K, HDF_SPEED_RPM = 8.6, 1380.0
PWF_LOW_W, PWF_HIGH_W = 3500.0, 9000.0

BLOCK_ROWS = 65536  # rows drawn per vectorised block; fixed so that output never depends on chunking


def angular_speed(rpm: np.ndarray | pd.Series | float) -> np.ndarray | pd.Series | float:
    """Rotational speed in rad/s."""
    return rpm * (2.0 * np.pi / 60.0)


def machine_ids(machines: int) -> list[str]:
    """`M-0001`, `M-0002`, ... (wider when the fleet needs it)."""
    width = max(4, len(str(machines)))
    return [f"M-{i:0{width}d}" for i in range(1, machines + 1)]


def fleet_types(machines: int, rng: np.random.Generator) -> np.ndarray:
    """Machine types in the AI4I mix L 60 / M 30 / H 10 % (largest remainder), in random order."""
    shares = np.array([TYPE_SHARES[t] for t in MACHINE_TYPES])
    counts = np.floor(shares * machines).astype(int)
    remainders = shares * machines - counts
    counts[np.argsort(-remainders, kind="stable")[: machines - counts.sum()]] += 1
    return rng.permutation(np.repeat(np.array(MACHINE_TYPES), counts))


def physics_failures(
    machine_type: np.ndarray,
    air: np.ndarray,
    process: np.ndarray,
    speed: np.ndarray,
    torque: np.ndarray,
    wear: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """HDF, PWF and OSF from sensor values: the rules the AI4I file follows exactly."""
    hdf = (process - air < HDF_DIFF_K) & (speed < HDF_SPEED_RPM)
    power = torque * angular_speed(speed)
    pwf = (power < PWF_LOW_W) | (power > PWF_HIGH_W)
    limit = np.select(
        [machine_type == t for t in MACHINE_TYPES], [OSF_LIMIT_MIN_NM[t] for t in MACHINE_TYPES]
    )
    osf = wear * torque > limit
    return hdf, pwf, osf


def ar1(noise: np.ndarray, phi: float, previous: np.ndarray, span: int = 256) -> np.ndarray:
    """y[t] = phi * y[t-1] + noise[t] down axis 0, starting after `previous`; vectorised in spans short
    enough that phi ** -span stays well conditioned."""
    out = np.empty_like(noise)
    for at in range(0, len(noise), span):
        e = noise[at : at + span]
        k = np.arange(len(e))[:, None]
        out[at : at + span] = phi**k * (phi * previous + np.cumsum(e * phi**-k, axis=0))
        previous = out[at + len(e) - 1]
    return out


class Fleet:
    """The state of every machine, advanced a block of time steps at a time."""

    def __init__(self, machines: int, seed: int, start: datetime, interval_s: float) -> None:
        if machines < 1:
            raise ValueError(f"machines must be >= 1, got {machines}")
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.rng = np.random.default_rng(seed)
        self.machines = machines
        self.ids = np.array(machine_ids(machines), dtype=object)
        self.types = fleet_types(machines, self.rng)
        self.wear_step = np.array([WEAR_STEP_MIN[t] for t in self.types], dtype=np.int64)
        self.air_phi = np.sqrt(1.0 - (AIR_STEP_SD_K / AIR_SD_K) ** 2)
        self.diff_phi = np.sqrt(1.0 - (DIFF_STEP_SD_K / DIFF_SD_K) ** 2)
        # The previous deviation from the mean, per machine, drawn from the walk's stationary spread.
        self.air_dev = self.rng.normal(0.0, AIR_SD_K, machines)
        self.diff_dev = self.rng.normal(0.0, DIFF_SD_K, machines)
        self.life_rows, self.life_fails = self._new_tools(machines)
        self.age = (self.rng.random(machines) * self.life_rows).astype(np.int64)
        self.interval_ns = round(interval_s * 1e6) * 1000
        start_ts = pd.Timestamp(start)
        start_ns = (
            start_ts.tz_localize("UTC") if start_ts.tzinfo is None else start_ts.tz_convert("UTC")
        ).value
        offsets_ms = np.floor(self.rng.random(machines) * interval_s * 1000).astype(np.int64)
        self.clock_ns = start_ns + offsets_ms * 1_000_000
        self.step = 0

    def _new_tools(self, n: int, step: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rows each new tool lasts (its last wear lies in 198-253 min) and whether it fails (TWF)."""
        step = self.wear_step if step is None else step
        low, high = -(-TOOL_CHANGE_MIN[0] // step), TOOL_CHANGE_MIN[1] // step
        last = low + np.floor(self.rng.random(n) * (high - low + 1)).astype(np.int64)
        return last + 1, self.rng.random(n) < TWF_SHARE_OF_CHANGES

    def _tool_wear(self, steps: int) -> tuple[np.ndarray, np.ndarray]:
        """Tool wear (steps x machines) and the TWF flags at the last reading of failed tools."""
        m = self.machines
        life_start = -self.age.copy()
        starts = np.zeros((steps, m), dtype=bool)
        twf = np.zeros((steps, m), dtype=bool)
        end = life_start + self.life_rows - 1
        while (due := np.flatnonzero(end < steps)).size:
            twf[end[due], due] = self.life_fails[due]
            life_start[due] = end[due] + 1
            self.life_rows[due], self.life_fails[due] = self._new_tools(due.size, self.wear_step[due])
            opened = due[life_start[due] < steps]
            starts[life_start[opened], opened] = True
            end[due] = life_start[due] + self.life_rows[due] - 1
        rows = np.arange(steps)[:, None]
        last_start = np.maximum.accumulate(np.where(starts, rows, np.iinfo(np.int64).min), axis=0)
        age = rows - np.maximum(last_start, -self.age)
        self.age = steps - life_start
        return age * self.wear_step, twf

    def advance(self, steps: int) -> pd.DataFrame:
        """Readings of every machine for the next `steps` time steps, ordered by step then machine."""
        rng, m = self.rng, self.machines
        air_dev = ar1(rng.normal(0.0, AIR_STEP_SD_K, (steps, m)), self.air_phi, self.air_dev)
        diff_dev = ar1(rng.normal(0.0, DIFF_STEP_SD_K, (steps, m)), self.diff_phi, self.diff_dev)
        if steps:
            self.air_dev, self.diff_dev = air_dev[-1], diff_dev[-1]
        air = np.round(AIR_MEAN_K + air_dev, 1)
        process = np.round(AIR_MEAN_K + air_dev + DIFF_MEAN_K + diff_dev, 1)
        torque_raw = np.abs(rng.normal(TORQUE_MEAN_NM, TORQUE_SD_NM, (steps, m)))
        speed = np.round(
            SPEED_BASE_RPM
            + SPEED_POWER_W / (angular_speed(1.0) * (torque_raw + SPEED_TORQUE_OFFSET_NM))
            + rng.normal(0.0, SPEED_NOISE_RPM, (steps, m))
        )
        torque = np.round(torque_raw, 1)
        wear, twf = self._tool_wear(steps)
        types = np.broadcast_to(self.types, (steps, m))
        hdf, pwf, osf = physics_failures(types, air, process, speed, torque, wear)
        rnf = rng.random((steps, m)) < RNF_RATE
        ns = self.clock_ns + (self.step + np.arange(steps, dtype=np.int64))[:, None] * self.interval_ns
        self.step += steps
        modes = {"twf": twf, "hdf": hdf, "pwf": pwf, "osf": osf, "rnf": rnf}
        columns = {
            "machine_id": np.broadcast_to(self.ids, (steps, m)).ravel(),
            "timestamp": pd.DatetimeIndex(ns.ravel(), tz="UTC"),
            "machine_type": types.ravel(),
            "air_temperature_k": air.ravel(),
            "process_temperature_k": process.ravel(),
            "rotational_speed_rpm": speed.ravel(),
            "torque_nm": torque.ravel(),
            "tool_wear_min": wear.ravel().astype(np.float64),
            LABEL_COLUMN: np.logical_or.reduce(list(modes.values())).ravel().astype(np.int8),
            **{name: flags.ravel().astype(np.int8) for name, flags in modes.items()},
        }
        return pd.DataFrame(columns, columns=list(GENERATED_COLUMNS))


def iter_readings(
    machines: int, rows: int | None, seed: int, start: datetime | None = None, interval_s: float = 60.0
) -> Iterator[pd.DataFrame]:
    """`rows` readings (endless when None) in blocks with a global row index; the same rows as
    `generate_readings` whatever the consumer does with the blocks."""
    if rows is not None and rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    fleet = Fleet(machines, seed, start or DEFAULT_START, interval_s)
    steps_per_block = max(1, BLOCK_ROWS // machines)
    done = 0
    while rows is None or done < rows:
        left = steps_per_block * machines if rows is None else rows - done
        block = fleet.advance(min(steps_per_block, -(-left // machines))).iloc[:left]
        block.index = pd.RangeIndex(done, done + len(block))
        done += len(block)
        yield block


def generate_readings(
    machines: int, rows: int, seed: int, start: datetime | None = None, interval_s: float = 60.0
) -> pd.DataFrame:
    """`rows` readings (all machines, step by step) with columns GENERATED_COLUMNS; same args, same rows."""
    blocks = list(iter_readings(machines, rows, seed, start, interval_s))
    if not blocks:
        return Fleet(machines, seed, start or DEFAULT_START, interval_s).advance(0)
    return pd.concat(blocks)


def rechunk(blocks: Iterator[pd.DataFrame], size: int) -> Iterator[pd.DataFrame]:
    """Frames of exactly `size` rows (the last may be shorter) from frames of any size."""
    pending: list[pd.DataFrame] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += len(block)
        while held >= size:
            joined = pd.concat(pending) if len(pending) > 1 else pending[0]
            yield joined.iloc[:size]
            pending, held = [joined.iloc[size:]], held - size
    if held:
        yield pd.concat(pending) if len(pending) > 1 else pending[0]
