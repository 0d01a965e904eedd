"""Lead-time metrics (mfd.modeling.lead_time) on a hand-made fleet: hourly readings, a 10 h horizon."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mfd.modeling.lead_time import SCORE, alarming, lead_time
from mfd.profiles import MACHINE, TIMESTAMP

T0 = pd.Timestamp("2024-01-01", tz="UTC")
HORIZON = pd.Timedelta(hours=10)


def hours(h: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=h)


def machine(name: str, scores: list[float]) -> pd.DataFrame:
    return pd.DataFrame({MACHINE: name, TIMESTAMP: [hours(h) for h in range(len(scores))], SCORE: scores})


def records(*pairs: tuple[str, float]) -> pd.DataFrame:
    return pd.DataFrame({MACHINE: [m for m, _ in pairs], TIMESTAMP: [hours(h) for _, h in pairs]})


def test_debouncing_needs_k_consecutive_readings() -> None:
    got = alarming(np.array([0.9, 0.1, 0.9, 0.9, 0.9, 0.2, 0.95]), 0.5, 2)
    assert got.tolist() == [False, False, False, True, True, False, False]
    assert alarming(np.array([0.5]), 0.5, 1).tolist() == [True]


def test_a_failure_warned_early_and_one_warned_late() -> None:
    early = [0.0] * 20 + [0.9] * 9 + [0.9]  # fails at 29 h, alarming from 20 h: 9 h ahead
    late = [0.0] * 27 + [0.9] * 3  # fails at 29 h, alarming from 27 h: 2 h ahead
    readings = pd.concat([machine("a", early), machine("b", late)])
    got = lead_time(readings, records(("a", 29), ("b", 29)), threshold=0.5, horizon=HORIZON)
    assert (got.failures, got.warned) == (2, 1)  # L = 5 h: only a
    assert got.share_warned == 0.5
    assert got.median_lead_hours == (9 + 2) / 2
    assert (got.true_alarms, got.false_alarms, got.censored_alarms) == (2, 0, 0)
    assert got.precision == 1.0
    # k = 3 moves both alarms two readings later
    debounced = lead_time(readings, records(("a", 29), ("b", 29)), threshold=0.5, horizon=HORIZON, k=3)
    assert debounced.median_lead_hours == (7 + 0) / 2 and debounced.warned == 1


def test_false_alarms_per_machine_day_and_censoring() -> None:
    # no failure record: one alarm at 5 h (its future is known for 10 h: false), one at 45 h (censored)
    scores = [0.0] * 5 + [0.9, 0.9] + [0.0] * 38 + [0.9] + [0.0] * 2
    got = lead_time(machine("c", scores), records(), threshold=0.5, horizon=HORIZON)
    assert (got.true_alarms, got.false_alarms, got.censored_alarms) == (0, 1, 1)
    assert got.failures == 0 and math.isnan(got.share_warned)
    # healthy exposure: readings 0..37 (the last 10 h are censored), one hour each
    assert got.healthy_days == 38 / 24
    assert got.false_alarms_per_machine_day == 1 / (38 / 24)
    assert got.precision == 0.0


def test_two_failures_close_together_each_have_their_own_window() -> None:
    # failures at 20 h and 24 h: the second's window starts after the first failure, so the alarm at 16 h
    # warns the first (4 h ahead) but not the second; the alarm at 22 h warns the second 2 h ahead
    scores = [0.0] * 16 + [0.9] * 3 + [0.0] * 3 + [0.9] * 3
    got = lead_time(machine("d", scores), records(("d", 20), ("d", 24)), threshold=0.5, horizon=HORIZON)
    assert got.failures == 2
    assert got.median_lead_hours == (4 + 2) / 2
    assert got.warned == 0  # neither at least 5 h ahead
    assert got.true_alarms == 2 and got.false_alarms == 0
    assert (
        lead_time(
            machine("d", scores),
            records(("d", 20), ("d", 24)),
            threshold=0.5,
            horizon=HORIZON,
            lead=pd.Timedelta("2h"),
        ).warned
        == 2
    )


def test_a_failure_without_readings_in_its_window_is_not_observable() -> None:
    readings = machine("e", [0.0] * 5)  # readings end at 4 h
    got = lead_time(readings, records(("e", 40)), threshold=0.5, horizon=HORIZON)
    assert got.failures == 0 and got.warned == 0
    # readings 0..4 are more than a horizon before the failure: healthy, their future known
    assert got.healthy_days == 4 / 24
