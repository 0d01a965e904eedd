"""What one batch of scored readings does to the alarms, computed with numpy over the whole batch: rows
sorted by (machine, reading id) once; each machine's streak of consecutive crossings continued from the one
`machine_risk` kept; per machine the alarm it opens (at the first reading whose streak reaches the
debounce) or the crossings it adds to its unresolved alarm, and its new `machine_risk` row. No SQL here
(`mfd.alarms.writes` reads and writes)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from mfd.alarms.model import AlarmUpdate

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COMPACT = json.JSONEncoder(separators=(",", ":"))  # the trend's layout: [[t,risk],[t,risk],...]


def as_datetime(ns: int) -> datetime:
    """A UTC datetime (microseconds) of nanoseconds since the epoch; ~50x cheaper than pd.Timestamp."""
    return _EPOCH + timedelta(microseconds=int(ns) // 1000)


def _times(values: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch (UTC) of a column of times (naive ones are UTC)."""
    if values.dtype.kind != "M":  # strings or objects; a datetime64 column is taken as it is (fast)
        values = pd.to_datetime(values, utc=True)
    times = pd.DatetimeIndex(values)
    return (times if times.tz is not None else times.tz_localize(UTC)).as_unit("ns").asi8


def _floats(frame: pd.DataFrame, column: str, order: np.ndarray) -> np.ndarray | None:
    if column not in frame:
        return None
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float, na_value=np.nan)[order]


@dataclass
class Batch:
    """The scored frame's columns as arrays sorted by (machine, reading id); `pos` maps a sorted row back to
    the frame (whose other columns, sensors and top features, only the peak readings need)."""

    frame: pd.DataFrame
    pos: np.ndarray
    code: np.ndarray  # the machine of each sorted row: an index into `machines`
    machines: list[str]
    reading_id: np.ndarray
    probability: np.ndarray
    crossed: np.ndarray
    ns: np.ndarray
    threshold: np.ndarray | None
    rul: np.ndarray | None

    @classmethod
    def of(cls, scored: pd.DataFrame) -> Batch:
        frame = scored  # read by position only
        codes, uniques = pd.factorize(frame["machine_id"])
        rid = frame["reading_id"].to_numpy(dtype=np.int64)
        order = np.lexsort((rid, codes))
        return cls(
            frame=frame,
            pos=order,
            code=codes[order],
            machines=[str(u) for u in uniques],
            reading_id=rid[order],
            probability=frame["probability"].to_numpy(dtype=float)[order],
            crossed=(frame["label"].to_numpy() == 1)[order],
            ns=_times(frame["timestamp"])[order],
            threshold=_floats(frame, "threshold", order),
            rul=_floats(frame, "rul_estimate", order),
        )

    def take(self, keep: np.ndarray) -> Batch:
        """The rows where `keep` (machines keep their codes)."""
        pick = lambda a: None if a is None else a[keep]  # noqa: E731
        return Batch(
            self.frame,
            self.pos[keep],
            self.code[keep],
            self.machines,
            self.reading_id[keep],
            self.probability[keep],
            self.crossed[keep],
            self.ns[keep],
            pick(self.threshold),
            pick(self.rul),
        )

    def time(self, i: int) -> datetime:
        return as_datetime(self.ns[i])

    def labels(self, name: str, rows: np.ndarray) -> list[str | None]:
        """The frame's text column `name` at the given sorted rows (None where missing or no column)."""
        if name not in self.frame:
            return [None] * len(rows)
        values = self.frame[name].to_numpy(dtype=object)[self.pos[rows]]
        return [None if pd.isna(v) else str(v) for v in values]


def _nan_none(value: float | None) -> float | None:
    return None if value is None or np.isnan(value) else float(value)


@dataclass
class Plan:
    """The batch's effect: alarms to open, bumps of unresolved alarms, `machine_risk` rows. `peak` holds
    the sorted row of each peak reading to explain (with the batch, for `mfd.alarms.writes`)."""

    batch: Batch
    opens: list[dict[str, Any]] = field(default_factory=list)
    bumps: list[dict[str, Any]] = field(default_factory=list)
    risk: list[dict[str, Any]] = field(default_factory=list)
    known: set[str] = field(default_factory=set)  # machines with a machine_risk row before this batch
    taken: int = 0
    crossings: int = 0

    def report(self, report: AlarmUpdate) -> AlarmUpdate:
        report.skipped, report.machines = report.readings - self.taken, len(self.risk)
        report.crossings, report.opened, report.bumped = self.crossings, len(self.opens), len(self.bumps)
        return report


@dataclass
class _Runs:
    """Per sorted row: the streak ending there (`run`), the row after the last reset (`since`), whether the
    streak continues the one before the batch (`carried`); per machine group: start and end rows."""

    run: np.ndarray
    since: np.ndarray
    carried: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    group: np.ndarray


def runs(crossed: np.ndarray, code: np.ndarray, prior_streak: np.ndarray) -> _Runs:
    """Consecutive crossings per machine (rows sorted by machine), continuing `prior_streak[code]`."""
    n = len(crossed)
    idx = np.arange(n)
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]]) if n else np.empty(0, dtype=np.int64)
    ends = np.r_[starts[1:], n].astype(np.int64)
    group = np.repeat(np.arange(len(starts)), ends - starts)
    marker = np.where(crossed, -1, idx)  # a reading below the threshold resets the streak at itself
    marker[starts] = np.where(crossed[starts], starts - 1, starts)
    last_reset = np.maximum.accumulate(marker) if n else marker
    carried = last_reset == starts[group] - 1
    run = idx - last_reset + np.where(carried, prior_streak[code], 0)
    return _Runs(run, last_reset + 1, carried, starts, ends, group)


def _peak(batch: Batch, lo: int, hi: int) -> int:
    """The crossing row with the highest risk in rows lo..hi-1 (at least one crosses)."""
    masked = np.where(batch.crossed[lo:hi], batch.probability[lo:hi], -1.0)
    return lo + int(np.argmax(masked))


def _streak_start(batch: Batch, r: _Runs, i: int, prior: Any) -> tuple[int, datetime]:
    """(reading id, time) where the streak ending at row i began: in this batch, or before it (`prior`)."""
    if r.carried[i] and prior is not None and prior["streak"] and prior["streak_first_id"] is not None:
        return int(prior["streak_first_id"]), prior["streak_first_at"]
    return int(batch.reading_id[r.since[i]]), batch.time(int(r.since[i]))


def _open(batch: Batch, r: _Runs, g: int, first_due: int, prior: Any, cum: np.ndarray) -> dict[str, Any]:
    end = int(r.ends[g]) - 1
    last = int(r.starts[g]) + int(np.flatnonzero(batch.crossed[r.starts[g] : r.ends[g]])[-1])
    first_id, first_seen = _streak_start(batch, r, first_due, prior)
    peak = _peak(batch, int(r.since[first_due]), end + 1)
    return {
        "machine_id": batch.machines[batch.code[first_due]],
        "count": int(r.run[first_due]) + int(cum[end] - cum[first_due]),
        "threshold": None if batch.threshold is None else _nan_none(batch.threshold[last]),
        "first_reading_id": first_id,
        "first_seen": first_seen,
        "last_reading_id": int(batch.reading_id[last]),
        "last_seen": batch.time(last),
        "peak": peak,
        "peak_risk": float(batch.probability[peak]),
    }


def _bump(batch: Batch, r: _Runs, g: int, alarm: Any, crossings: int) -> dict[str, Any]:
    lo, hi = int(r.starts[g]), int(r.ends[g])
    last = lo + int(np.flatnonzero(batch.crossed[lo:hi])[-1])
    peak = _peak(batch, lo, hi)
    higher = float(batch.probability[peak]) > float(alarm["peak_risk"])
    return {
        "id": int(alarm["id"]),
        "crossings": crossings,
        "last_reading_id": int(batch.reading_id[last]),
        "last_seen": batch.time(last),
        "peak": peak if higher else None,
        "peak_risk": float(batch.probability[peak]) if higher else None,
    }


def _trend_parts(batch: Batch, r: _Runs, points: int) -> list[str]:
    """Per group, its last `points` readings as JSON pairs joined by commas ("[t,risk],...")."""
    tail = np.flatnonzero(np.arange(len(batch.code)) >= r.ends[r.group] - points)
    pairs = list(
        zip((batch.ns[tail] // 10**9).tolist(), np.round(batch.probability[tail], 4).tolist(), strict=True)
    )
    bounds = np.searchsorted(tail, r.starts).tolist() + [len(tail)]
    return [_COMPACT.encode(pairs[bounds[g] : bounds[g + 1]])[1:-1] for g in range(len(r.starts))]


def _trend(prior: Any, new: str, added: int, points: int) -> str:
    """The stored trend's last `points - added` points followed by the `added` new ones (a compact trend
    is cut as text; one stored in another JSON layout is parsed)."""
    text = prior["trend"] if prior is not None and added < points else None
    if not text or len(text) <= 2:
        return f"[{new}]"
    if " " in text:  # not written by _trend_parts: parse it
        text = _COMPACT.encode(json.loads(text))
    kept = text[2:-2].split("],[")[-(points - added) :]
    return f"[[{'],['.join(kept)}],{new}]"


def _floats_or_none(values: np.ndarray | None, rows: np.ndarray) -> list[float | None]:
    if values is None:
        return [None] * len(rows)
    return [None if np.isnan(v) else v for v in values[rows].tolist()]


def _risk_rows(batch: Batch, r: _Runs, states: dict[str, Any], trends: list[str]) -> list[dict[str, Any]]:
    """Each machine's new machine_risk row: its last reading's risk, threshold, type and time to failure,
    the streak it ends (and where that began), the trend with the batch's points appended."""
    last = r.ends - 1
    streak = r.run[last].tolist()
    names = [batch.machines[c] for c in batch.code[last].tolist()]
    types = batch.labels("machine_type", last)
    thresholds, rul = _floats_or_none(batch.threshold, last), _floats_or_none(batch.rul, last)
    ids, risks = batch.reading_id[last].tolist(), batch.probability[last].tolist()
    rows = []
    for g, i in enumerate(last.tolist()):
        since = _streak_start(batch, r, i, states.get(names[g])) if streak[g] else (None, None)
        rows.append(
            {
                "machine_id": names[g],
                "machine_type": types[g],
                "streak": streak[g],
                "streak_first_id": since[0],
                "streak_first_at": since[1],
                "last_reading_id": ids[g],
                "last_timestamp": batch.time(i),
                "risk": risks[g],
                "threshold": thresholds[g],
                "rul_estimate": rul[g],
                "trend": trends[g],
            }
        )
    return rows


def plan_batch(
    batch: Batch, states: dict[str, Any], active: dict[str, Any], debounce: int, points: int
) -> Plan:
    """The batch's opens, bumps and machine_risk rows, given the machines' stored `states` (machine_risk
    rows) and unresolved `active` alarms; readings a machine already took are left out."""
    prior_last = np.array([int(states[m]["last_reading_id"]) if m in states else -1 for m in batch.machines])
    prior_streak = np.array([int(states[m]["streak"]) if m in states else 0 for m in batch.machines])
    b = batch.take(batch.reading_id > prior_last[batch.code])
    plan = Plan(batch=b, known=set(states), taken=len(b.code), crossings=int(b.crossed.sum()))
    if not len(b.code):
        return plan
    r = runs(b.crossed, b.code, prior_streak)
    cum = np.cumsum(b.crossed)
    crossings = np.add.reduceat(b.crossed.astype(np.int64), r.starts)
    due = r.run >= debounce
    firsts = np.full(len(r.starts), -1)
    rows = np.flatnonzero(due)
    groups, at = np.unique(r.group[rows], return_index=True)
    firsts[groups] = rows[at]
    parts, trends = _trend_parts(b, r, points), []
    sizes = np.minimum(r.ends - r.starts, points).tolist()
    for g, code in enumerate(b.code[r.starts].tolist()):
        machine = b.machines[code]
        prior, alarm = states.get(machine), active.get(machine)
        if alarm is not None and crossings[g]:
            plan.bumps.append(_bump(b, r, g, alarm, int(crossings[g])))
        elif alarm is None and firsts[g] >= 0:
            plan.opens.append(_open(b, r, g, int(firsts[g]), prior, cum))
        trends.append(_trend(prior, parts[g], sizes[g], points))
    plan.risk = _risk_rows(b, r, states, trends)
    return plan
