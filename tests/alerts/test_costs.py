"""Cost matrix parsing, the cost-optimal threshold against hand-computed cases, and a batch's expected cost."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mfd.alerts.costs import (
    NEVER_ALARM,
    Costs,
    DecisionPolicy,
    batch_costs,
    cost_curve,
    failure_episodes,
    matrix_json,
    optimal_threshold,
    parse_cost_matrix,
    thresholds_by_type,
)
from mfd.errors import MfdError

Y = np.array([0, 0, 1, 0, 1])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.9])


def test_optimal_threshold_matches_the_hand_computed_costs() -> None:
    # alarm at p >= t.  t=0.1: 3 false stops; 0.35: 2 (0.4, 0.8); 0.4: 2 + the 0.35 failure missed;
    # 0.8: 1 + 1 missed; 0.9: 0 + 1 missed; never: 2 missed.
    expensive_misses = Costs(missed_failure=10, false_stop=1, late_alarm=0)
    curve = cost_curve(Y, P, expensive_misses)
    assert curve.thresholds.tolist() == [0.1, 0.35, 0.4, 0.8, 0.9, NEVER_ALARM]
    assert curve.cost.tolist() == [3, 2, 12, 11, 10, 20]
    choice = optimal_threshold(Y, P, expensive_misses)
    assert (choice.threshold, choice.expected_cost, choice.cost_no_model) == (0.35, 2.0, 20.0)

    # Stops expensive: 30, 20, 21, 11, 1, 2 -> alarm only at 0.9.
    expensive_stops = Costs(missed_failure=1, false_stop=10, late_alarm=0)
    assert cost_curve(Y, P, expensive_stops).cost.tolist() == [30, 20, 21, 11, 1, 2]
    assert optimal_threshold(Y, P, expensive_stops).threshold == 0.9

    # The most likely reading is no failure and a stop costs more than a miss: never alarm
    # (t=0.2: 100; t=0.9: 100 + 1; never: 1).
    assert (
        optimal_threshold(np.array([1, 0]), np.array([0.2, 0.9]), Costs(1, 100, 0)).threshold == NEVER_ALARM
    )


def test_late_alarms_count_per_failure_episode() -> None:
    # one machine: rows 2-4 are one failure episode, first at 0.2, then 0.7; row 6 a one-row episode
    y = np.array([0, 0, 1, 1, 1, 0, 1])
    p = np.array([0.1, 0.3, 0.2, 0.7, 0.6, 0.5, 0.9])
    episodes = failure_episodes(y, np.array(["a"] * 7))
    assert episodes.tolist() == [-1, -1, 0, 0, 0, -1, 1]
    costs = Costs(missed_failure=100, false_stop=10, late_alarm=30)
    curve = cost_curve(y, p, costs, episodes)
    at = dict(zip(curve.thresholds.tolist(), curve.cost.tolist(), strict=True))
    # t=0.2: on time, stops at 0.3 and 0.5 -> 20; t=0.3: episode late (30) + stops 0.3, 0.5 -> 50;
    # t=0.6: late 30 + none -> 30; t=0.9: episode missed 100; t=never: 200.
    assert (at[0.2], at[0.3], at[0.5], at[0.6], at[0.9], at[NEVER_ALARM]) == (20, 50, 40, 30, 100, 200)
    assert optimal_threshold(y, p, costs, episodes).threshold == 0.2
    # Two machines interleaved: their failure rows are separate episodes.
    assert failure_episodes(np.array([1, 1, 1]), np.array(["a", "b", "a"])).tolist() == [0, 1, 0]


def test_thresholds_per_machine_type_use_each_types_costs() -> None:
    validation = pd.DataFrame(
        {
            "y": np.tile(Y, 12),
            "proba": np.tile(P, 12),
            "machine_type": ["L"] * 20 + ["M"] * 20 + ["H"] * 20,
        }
    )
    matrix = parse_cost_matrix(
        {
            "L": {"missed_failure": 10, "false_stop": 1, "late_alarm": 0},
            "M": {"missed_failure": 1, "false_stop": 10, "late_alarm": 0},
            "H": {"missed_failure": 10, "false_stop": 1, "late_alarm": 0},
        }
    )
    choices = thresholds_by_type(validation, matrix)
    assert {t: c.threshold for t, c in choices.items()} == {"L": 0.35, "M": 0.9, "H": 0.35}
    assert choices["L"].expected_cost == 8.0 and choices["L"].rows == 20 and not choices["L"].pooled
    # H with fewer than MIN_TYPE_FAILURES failures takes all rows, with its own costs
    few = validation.assign(machine_type=["L"] * 58 + ["H"] * 2)
    assert thresholds_by_type(few, matrix)["H"].pooled


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"L": {"missed_failure": -1, "false_stop": 1, "late_alarm": 1}}, "L.missed_failure is negative"),
        ({"L": {"missed_failure": 1, "false_stop": 1}}, "L: late_alarm is missing"),
        ({"L": {"missed_failure": 1, "false_stop": 1, "late_alarm": 1}}, "machine type M is missing"),
        ({"X": {}}, "unknown machine type(s) X"),
        ('{"L": ', "not valid JSON"),
        ({"L": {"missed_failure": "a lot", "false_stop": 1, "late_alarm": 1}}, "must be a number"),
        ({"L": {"missed_failure": 1, "false_stop": 1, "late_alarm": 1, "fine": 2}}, "unknown cost(s) fine"),
    ],
)
def test_bad_cost_matrices_are_refused_with_the_entry_named(raw: object, message: str) -> None:
    with pytest.raises(MfdError) as caught:
        parse_cost_matrix(raw)  # type: ignore[arg-type]
    assert message in str(caught.value)


def test_the_default_matrix_round_trips_through_its_tag() -> None:
    matrix = parse_cost_matrix(None)
    assert parse_cost_matrix(matrix_json(matrix)) == matrix
    assert set(json.loads(matrix_json(matrix))) == {"L", "M", "H"}


def test_batch_costs_against_no_model_and_rules() -> None:
    matrix = parse_cost_matrix(
        {t: {"missed_failure": 100, "false_stop": 10, "late_alarm": 0} for t in ("L", "M", "H")}
    )
    proba = np.array([0.9, 0.1, 0.5])
    alarm = np.array([True, False, False])
    rules = np.array([True, True, False])
    costs = batch_costs(proba, alarm, rules, np.array(["L", "M", "H"]), matrix)
    # model: stop 0.1*10 + missed 0.1*100 + 0.5*100 = 61; none: 150; rules: 1 + 9 + 50 = 60
    assert costs["expected_cost_model"] == pytest.approx(61.0)
    assert costs["expected_cost_no_model"] == pytest.approx(150.0)
    assert costs["expected_cost_rules"] == pytest.approx(60.0)
    assert costs["cost_avoided_vs_no_model"] == pytest.approx(89.0)
    assert costs["cost_avoided_vs_rules"] == pytest.approx(-1.0)


def test_policy_thresholds_per_type_from_version_tags() -> None:
    policy = DecisionPolicy.from_tags({"thresholds": '{"L": 0.2, "H": 0.7}'}, default=0.5)
    assert policy.threshold_for(pd.Series(["L", "M", "H"])).tolist() == [0.2, 0.5, 0.7]
    assert DecisionPolicy.from_tags({}, 0.4).threshold_for(np.array(["H"])).tolist() == [0.4]
