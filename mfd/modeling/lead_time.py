"""Lead-time metrics of a risk score: how early and how reliably the warnings come.

Input: readings (machine_id, timestamp, score) and failure records (machine_id, timestamp). At an operating
threshold with debouncing, a reading is *alarming* when it and the `k - 1` readings of its machine before it
all score at or above the threshold; an *alarm* is one run of alarming readings, raised at the run's first.

- A failure at T is *observable* when its machine has a reading in its window (max(T - horizon, the machine's
  previous failure), T]; it is *warned* when an alarming reading in that window lies at least `lead` before T
  (default half the horizon). Its lead is T minus the window's first alarming reading.
- An alarm raised at s is *true* when a failure of its machine follows within the horizon (s <= T <= s +
  horizon); *censored* when none does but the machine's readings end before s + horizon (its future is
  unknown); *false* otherwise. Precision per alarm: true / (true + false).
- False alarms per machine-day: false alarms over the healthy exposure: for every reading outside all failure
  windows and not in the last horizon of its machine's readings (unless a failure follows), the time to its
  machine's next reading.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from mfd.profiles import MACHINE, TIMESTAMP

SCORE = "score"
DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class LeadTime:
    failures: int  # observable failures
    warned: int  # warned at least `lead` before
    median_lead_hours: float  # over warned-or-not failures with any alarm in their window; nan when none
    true_alarms: int
    false_alarms: int
    censored_alarms: int
    healthy_days: float

    @property
    def share_warned(self) -> float:
        return self.warned / self.failures if self.failures else float("nan")

    @property
    def false_alarms_per_machine_day(self) -> float:
        return self.false_alarms / self.healthy_days if self.healthy_days else float("nan")

    @property
    def precision(self) -> float:
        raised = self.true_alarms + self.false_alarms
        return self.true_alarms / raised if raised else float("nan")

    def as_dict(self) -> dict[str, float]:
        return {
            **asdict(self),
            "share_warned": self.share_warned,
            "false_alarms_per_machine_day": self.false_alarms_per_machine_day,
            "precision_per_alarm": self.precision,
        }


def alarming(scores: np.ndarray, threshold: float, k: int) -> np.ndarray:
    """Per reading (one machine, in time order): True when it and the k - 1 before it score >= threshold."""
    above = np.asarray(scores, dtype=np.float64) >= threshold
    position = np.arange(len(above))
    last_below = np.maximum.accumulate(np.where(above, -1, position)) if len(above) else position
    return position - last_below >= k  # the run of readings at or above the threshold ending here


@dataclass
class _Tally:
    failures: int = 0
    warned: int = 0
    true_alarms: int = 0
    false_alarms: int = 0
    censored_alarms: int = 0
    healthy: pd.Timedelta = pd.Timedelta(0)


def _failures(
    times: np.ndarray, on: np.ndarray, failed: np.ndarray, horizon, lead, tally, leads
) -> np.ndarray:
    """Counts the machine's observable and warned failures; returns which readings lie in a failure window."""
    in_window = np.zeros(len(times), dtype=bool)
    previous = None
    for at in failed:
        start = at - horizon if previous is None else max(at - horizon, previous)
        rows = (times > start) & (times <= at) if previous is not None else (times >= start) & (times <= at)
        previous = at
        in_window |= rows
        if not rows.any():
            continue
        tally.failures += 1
        alarmed = times[rows & on]
        if len(alarmed):
            leads.append((at - alarmed[0]) / np.timedelta64(1, "h"))
            tally.warned += bool((at - alarmed[0]) >= lead)
    return in_window


def _alarms(times: np.ndarray, on: np.ndarray, failed: np.ndarray, horizon, tally: _Tally) -> None:
    raised = times[on & ~np.concatenate([[False], on[:-1]])]
    end = times[-1]
    for at in raised:
        if ((failed >= at) & (failed <= at + horizon)).any():
            tally.true_alarms += 1
        elif at + horizon > end:
            tally.censored_alarms += 1
        else:
            tally.false_alarms += 1


def _machine(group: pd.DataFrame, failed: np.ndarray, options: dict, tally: _Tally, leads: list) -> None:
    horizon = options["horizon"]
    times = group[TIMESTAMP].to_numpy()
    on = alarming(group[SCORE].to_numpy(), options["threshold"], options["k"])
    in_window = _failures(times, on, failed, horizon, options["lead"], tally, leads)
    _alarms(times, on, failed, horizon, tally)
    unknown = times + horizon > times[-1]
    if len(failed):
        unknown &= times > failed[-1]
    healthy = ~in_window & ~unknown
    gaps = np.append(np.diff(times), np.timedelta64(0, "ns"))
    tally.healthy += pd.Timedelta(gaps[healthy].sum())


def _naive(times: pd.Series) -> pd.Series:
    """UTC datetime64[ns] without a zone: numpy arrays of it compare and subtract without objects."""
    return pd.to_datetime(times, utc=True).dt.tz_localize(None).astype("datetime64[ns]")


def lead_time(
    readings: pd.DataFrame,
    failures: pd.DataFrame,
    *,
    threshold: float,
    horizon: pd.Timedelta,
    lead: pd.Timedelta | None = None,
    k: int = 1,
) -> LeadTime:
    """The lead-time metrics of `readings`' scores at `threshold` (see the module doc)."""
    lead = horizon / 2 if lead is None else lead
    options = {
        "threshold": threshold,
        "horizon": horizon.to_timedelta64(),
        "lead": lead.to_timedelta64(),
        "k": k,
    }
    tally, leads = _Tally(), []
    ordered = readings.assign(**{TIMESTAMP: _naive(readings[TIMESTAMP])})
    ordered = ordered.sort_values([MACHINE, TIMESTAMP], kind="stable")
    failures = failures.assign(**{TIMESTAMP: _naive(failures[TIMESTAMP])})
    by_machine = {m: np.sort(g[TIMESTAMP].to_numpy()) for m, g in failures.groupby(MACHINE, sort=False)}
    empty = np.array([], dtype=ordered[TIMESTAMP].to_numpy().dtype)
    for machine, group in ordered.groupby(MACHINE, sort=False):
        _machine(group, by_machine.get(machine, empty), options, tally, leads)
    return LeadTime(
        failures=tally.failures,
        warned=tally.warned,
        median_lead_hours=float(np.median(leads)) if leads else float("nan"),
        true_alarms=tally.true_alarms,
        false_alarms=tally.false_alarms,
        censored_alarms=tally.censored_alarms,
        healthy_days=tally.healthy / DAY,
    )


def failures_from_labels(frame: pd.DataFrame, label: str, horizon: pd.Timedelta) -> pd.DataFrame:
    """Failure records (machine_id, timestamp) read off labelled readings: per machine, each run of
    failure-labelled readings with gaps of at most `horizon` is one failure, at its last reading (with horizon
    labels the run ends at the failure; with AI4I's labels the failing reading is the run)."""
    positive = frame.loc[frame[label].fillna(0).astype("int64") == 1, [MACHINE, TIMESTAMP]]
    if positive.empty:
        return pd.DataFrame({MACHINE: pd.Series(dtype=object), TIMESTAMP: pd.Series(dtype="datetime64[ns]")})
    positive = positive.assign(**{TIMESTAMP: _naive(positive[TIMESTAMP])}).sort_values([MACHINE, TIMESTAMP])
    machine = positive[MACHINE].astype(str).to_numpy()
    times = positive[TIMESTAMP].to_numpy()
    last = np.ones(len(times), dtype=bool)
    last[:-1] = (machine[1:] != machine[:-1]) | ((times[1:] - times[:-1]) > horizon.to_timedelta64())
    return pd.DataFrame({MACHINE: positive[MACHINE].to_numpy()[last], TIMESTAMP: times[last]})


def hours_to_failure(frame: pd.DataFrame, failures: pd.DataFrame) -> np.ndarray:
    """Per reading of `frame` (row order kept): hours to its machine's next failure at or after it; NaN when
    none follows (the future is unknown: no RUL target)."""
    out = np.full(len(frame), np.nan)
    if not len(frame) or not len(failures):
        return out
    times = _naive(frame[TIMESTAMP]).to_numpy()
    machines = frame[MACHINE].astype(str).to_numpy()
    failed = failures.assign(**{TIMESTAMP: _naive(failures[TIMESTAMP])})
    for machine, group in failed.groupby(failed[MACHINE].astype(str), sort=False):
        rows = np.flatnonzero(machines == machine)
        at = np.sort(group[TIMESTAMP].to_numpy())
        nxt = np.searchsorted(at, times[rows], side="left")
        known = nxt < len(at)
        out[rows[known]] = (at[nxt[known]] - times[rows[known]]) / np.timedelta64(1, "h")
    return out
