"""The profile's early-warning keys: rul_cap, lead, debounce, probability_floor, false_alarm_budget; each
bad value is one ProfileError line naming the key."""

from __future__ import annotations

import copy

import pandas as pd
import pytest

from mfd.profiles import ProfileError, load, parse

BASE: dict = {
    "name": "press",
    "machine": {"column": "press_id"},
    "timestamp": {"column": "ts"},
    "sensors": {"force_kn": {"unit": "kN", "min": 0, "max": 500}},
    "failures": {"records": "maintenance"},
    "horizon": "12 h",
}


def _with(**keys: object) -> dict:
    return {**copy.deepcopy(BASE), **keys}


def test_defaults_without_the_keys() -> None:
    profile = parse(_with(), "press")
    assert profile.rul_cap is None and profile.lead is None
    assert profile.warning_lead == pd.Timedelta("6h")  # half the horizon
    assert (profile.debounce, profile.probability_floor, profile.false_alarm_budget) == (1, 0.0, None)
    assert profile.run_to_failure  # records, no label column


def test_the_keys_as_given() -> None:
    profile = parse(
        _with(rul_cap="125 h", lead="4 h", debounce=3, probability_floor=0.05, false_alarm_budget=0.2),
        "press",
    )
    assert (profile.rul_cap, profile.warning_lead) == (pd.Timedelta("125h"), pd.Timedelta("4h"))
    assert (profile.debounce, profile.probability_floor, profile.false_alarm_budget) == (3, 0.05, 0.2)


def test_shipped_profiles() -> None:
    assert load("cmapss").rul_cap == pd.Timedelta("125h") and load("cmapss").run_to_failure
    assert load("ai4i").rul_cap is None and not load("ai4i").run_to_failure  # a label column: snapshots


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"rul_cap": 125}, "profile press: rul_cap: 125 has no unit"),
        ({"rul_cap": "-5 h"}, "profile press: rul_cap: must be positive"),
        ({"rul_cap": "soon"}, "profile press: rul_cap: 'soon' is not a duration"),
        ({"lead": "20 h"}, "profile press: lead: '20 h' is longer than the horizon"),
        ({"debounce": 0}, "profile press: debounce: expected readings in a row"),
        ({"debounce": 1.5}, "profile press: debounce: expected readings in a row"),
        ({"probability_floor": 1.0}, "profile press: probability_floor: expected a probability in [0, 1)"),
        ({"probability_floor": True}, "profile press: probability_floor: expected a probability"),
        (
            {"false_alarm_budget": -1},
            "profile press: false_alarm_budget: expected false alarms per machine-day",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(keys: dict, message: str) -> None:
    with pytest.raises(ProfileError) as raised:
        parse(_with(**keys), "press")
    assert str(raised.value).startswith(message), raised.value
    assert "\n" not in str(raised.value)
