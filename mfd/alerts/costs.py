"""What an alarm decision costs: the cost matrix per machine type, the threshold per type that minimizes
expected cost on validation predictions, and the expected cost of a prediction batch against two baselines
("no model": never alarm; "rules": alarm on every physics-rule hit).

Costs are in one currency unit per event: a missed failure (no alarm during a failure episode), a false
stop (an alarm on a reading that is no failure), a late alarm (a failure episode alarmed after its first
reading). An episode is a run of consecutive failure readings of one machine; rows without a machine and
time (AI4I) are one-reading episodes, so there a failure is caught or missed, never late.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mfd.errors import MfdError
from mfd.schema import MACHINE_TYPES, PROFILE

COST_KINDS: tuple[str, ...] = ("missed_failure", "false_stop", "late_alarm")
# A threshold no probability reaches: the cost-optimal decision may be to never alarm.
NEVER_ALARM = math.nextafter(1.0, 2.0)
# A machine type with fewer validation failures than this gets its threshold from all validation rows
# (with its own costs): a handful of failures would make the optimum noise.
MIN_TYPE_FAILURES = 5


@dataclass(frozen=True)
class Costs:
    missed_failure: float
    false_stop: float
    late_alarm: float


CostMatrix = dict[str, Costs]

# The plant profile's costs per segment (`costs`; example figures where it gives none).
DEFAULT_COST_MATRIX: CostMatrix = {segment: Costs(**costs) for segment, costs in PROFILE.costs.items()}


def parse_cost_matrix(raw: str | Mapping[str, Any] | None) -> CostMatrix:
    """A cost matrix from JSON text or a mapping `{type: {kind: cost}}` (None or "" -> the default).

    Every machine type needs every kind, each a finite number >= 0; MfdError names the first bad entry."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return dict(DEFAULT_COST_MATRIX)
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise MfdError(f"cost matrix is not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise MfdError(f"cost matrix must map machine types to costs, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(MACHINE_TYPES))
    if unknown:
        raise MfdError(
            f"cost matrix: unknown machine type(s) {', '.join(unknown)}; use {'/'.join(MACHINE_TYPES)}"
        )
    matrix = {}
    for machine_type in MACHINE_TYPES:
        entry = raw.get(machine_type)
        if not isinstance(entry, Mapping):
            raise MfdError(
                f"cost matrix: machine type {machine_type} is missing; give {', '.join(COST_KINDS)} for it"
            )
        extra = sorted(set(entry) - set(COST_KINDS))
        if extra:
            raise MfdError(
                f"cost matrix {machine_type}: unknown cost(s) {', '.join(extra)}; use {', '.join(COST_KINDS)}"
            )
        values = {}
        for kind in COST_KINDS:
            value = entry.get(kind)
            if value is None:
                raise MfdError(f"cost matrix {machine_type}: {kind} is missing")
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise MfdError(f"cost matrix {machine_type}.{kind} must be a number, got {value!r}")
            if value < 0:
                raise MfdError(f"cost matrix {machine_type}.{kind} is negative ({value}); costs are >= 0")
            values[kind] = float(value)
        matrix[machine_type] = Costs(**values)
    return matrix


def matrix_json(matrix: CostMatrix) -> str:
    return json.dumps({t: asdict(c) for t, c in matrix.items()}, sort_keys=True)


def failure_episodes(y: np.ndarray, machine_id: np.ndarray | None = None) -> np.ndarray:
    """Episode number per row (rows in time order): consecutive failure rows of one machine share one;
    without machine ids every failure row is its own. Non-failure rows get -1."""
    y = np.asarray(y).astype(bool)
    episodes = np.full(len(y), -1, dtype="int64")
    if machine_id is None:
        episodes[y] = np.arange(int(y.sum()))
        return episodes
    frame = pd.DataFrame({"m": np.asarray(machine_id), "y": y})
    previous = frame.groupby("m", sort=False)["y"].shift(fill_value=False)
    starts = y & ~previous.to_numpy(dtype=bool)
    run = np.cumsum(starts) - 1
    # a run continues only through the same machine's consecutive failure rows
    last_start = pd.Series(np.where(starts, run, np.nan)).groupby(frame["m"]).ffill().to_numpy()
    episodes[y] = last_start[y].astype("int64")
    return episodes


@dataclass(frozen=True)
class CostCurve:
    """Expected cost (total) of alarming at `proba >= threshold`, for every candidate threshold."""

    thresholds: np.ndarray
    missed: np.ndarray
    late: np.ndarray
    false_stops: np.ndarray
    cost: np.ndarray


def cost_curve(
    y: np.ndarray, proba: np.ndarray, costs: Costs, episodes: np.ndarray | None = None
) -> CostCurve:
    """Counts and cost at each candidate threshold: every distinct probability, then NEVER_ALARM.

    `episodes` (from `failure_episodes`, rows in time order) groups failure rows; None: one per row."""
    y, proba = np.asarray(y).astype(bool), np.asarray(proba, dtype="float64")
    if episodes is None:
        episodes = failure_episodes(y)
    thresholds = np.append(np.unique(proba), NEVER_ALARM)
    negatives = np.sort(proba[~y])
    false_stops = len(negatives) - np.searchsorted(negatives, thresholds, side="left")
    ep = pd.DataFrame({"e": episodes[y], "p": proba[y]}).groupby("e", sort=False)["p"]
    first, peak = np.sort(ep.first().to_numpy()), np.sort(ep.max().to_numpy())
    missed = np.searchsorted(peak, thresholds, side="left")  # no alarm anywhere in the episode
    late = np.searchsorted(first, thresholds, side="left") - missed  # alarmed, not at its first reading
    cost = costs.missed_failure * missed + costs.late_alarm * late + costs.false_stop * false_stops
    return CostCurve(thresholds, missed, late, false_stops, cost.astype("float64"))


@dataclass(frozen=True)
class ThresholdChoice:
    """The cost-optimal threshold of one machine type and what it costs on the validation rows."""

    threshold: float
    expected_cost: float
    cost_no_model: float
    rows: int
    failures: int
    pooled: bool = False  # too few failures of this type: chosen on all validation rows


def optimal_threshold(
    y: np.ndarray, proba: np.ndarray, costs: Costs, episodes: np.ndarray | None = None
) -> ThresholdChoice:
    """The threshold with the lowest expected cost (ties: the highest, fewest alarms)."""
    curve = cost_curve(y, proba, costs, episodes)
    best = int(np.flatnonzero(curve.cost == curve.cost.min())[-1])
    return ThresholdChoice(
        threshold=float(curve.thresholds[best]),
        expected_cost=float(curve.cost[best]),
        cost_no_model=float(curve.cost[-1]),
        rows=len(proba),
        failures=int(np.asarray(y).astype(bool).sum()),
    )


def thresholds_by_type(validation: pd.DataFrame, matrix: CostMatrix) -> dict[str, ThresholdChoice]:
    """Per machine type, the threshold minimizing expected cost on validation predictions (columns `y`,
    `proba`, `machine_type`, optionally `episode`)."""
    validation = validation[validation["proba"].notna()]  # rows of folds a pruned trial never scored
    choices = {}
    for machine_type, costs in matrix.items():
        rows = validation[validation["machine_type"] == machine_type]
        pooled = int(rows["y"].sum()) < MIN_TYPE_FAILURES
        if pooled:
            rows = validation
        episodes = rows["episode"].to_numpy() if "episode" in rows else None
        choice = optimal_threshold(rows["y"].to_numpy(), rows["proba"].to_numpy(), costs, episodes)
        choices[machine_type] = ThresholdChoice(**{**asdict(choice), "pooled": pooled})
    return choices


def thresholds_json(choices: Mapping[str, ThresholdChoice | float]) -> str:
    """The per-type thresholds as the `thresholds` tag of a model version: `{"L": 0.31, ...}`."""
    return json.dumps(
        {
            t: round(c.threshold if isinstance(c, ThresholdChoice) else float(c), 6)
            for t, c in choices.items()
        },
        sort_keys=True,
    )


def parse_thresholds(text: str | None) -> dict[str, float]:
    """The `thresholds` tag back as `{type: threshold}` ({} when absent or unreadable)."""
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def threshold_array(
    machine_type: np.ndarray | pd.Series, thresholds: Mapping[str, float], default: float
) -> np.ndarray:
    """Each row's threshold: its machine type's, `default` for a type without one."""
    types = pd.Series(np.asarray(machine_type, dtype=object))
    return types.map(dict(thresholds)).fillna(default).to_numpy(dtype="float64")


def _cost_arrays(machine_type: np.ndarray, matrix: CostMatrix) -> tuple[np.ndarray, np.ndarray]:
    """Each row's cost of a missed failure and of a false stop (0 for a type the matrix lacks)."""
    types = np.asarray(machine_type, dtype=object)
    missed, false = np.zeros(len(types)), np.zeros(len(types))
    for machine_type_, costs in matrix.items():
        rows = types == machine_type_
        missed[rows], false[rows] = costs.missed_failure, costs.false_stop
    return missed, false


def _cost(failure: np.ndarray, alarm: np.ndarray, missed: np.ndarray, false: np.ndarray) -> float:
    return float(np.sum(np.where(alarm, (1.0 - failure) * false, failure * missed)))


def decision_cost(
    failure: np.ndarray, alarm: np.ndarray, machine_type: np.ndarray, matrix: CostMatrix
) -> float:
    """Cost of alarming on `alarm` rows when `failure` is each row's failure probability (or 0/1 label):
    missed failures where no alarm, false stops where an alarm meets no failure. Per reading: no late alarms."""
    missed, false = _cost_arrays(machine_type, matrix)
    return _cost(np.asarray(failure, dtype="float64"), np.asarray(alarm, dtype=bool), missed, false)


def batch_costs(
    proba: np.ndarray, alarm: np.ndarray, rule_hit: np.ndarray, machine_type: np.ndarray, matrix: CostMatrix
) -> dict[str, float]:
    """A prediction batch's expected cost (each reading's failure probability as the chance it fails) under
    the model's alarms, under never alarming ("no model") and under alarming on every rule hit, and what
    the model avoids against each."""
    missed, false = _cost_arrays(machine_type, matrix)
    proba = np.asarray(proba, dtype="float64")
    model = _cost(proba, np.asarray(alarm, dtype=bool), missed, false)
    none = float(np.sum(proba * missed))
    rules = _cost(proba, np.asarray(rule_hit, dtype=bool), missed, false)
    return {
        "expected_cost_model": model,
        "expected_cost_no_model": none,
        "expected_cost_rules": rules,
        "cost_avoided_vs_no_model": none - model,
        "cost_avoided_vs_rules": rules - model,
    }


# The model-version tags a DecisionPolicy is read from (written by `mfd.registry`).
THRESHOLDS_TAG, COST_MATRIX_TAG = "thresholds", "cost_matrix"
POLICY_TAGS: tuple[str, ...] = (THRESHOLDS_TAG, COST_MATRIX_TAG)


@dataclass(frozen=True)
class DecisionPolicy:
    """How a model version turns probabilities into alarms: its threshold per machine type (`default` for
    a type without one) and the cost matrix they were chosen under."""

    default: float
    thresholds: dict[str, float]
    cost_matrix: CostMatrix

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], default: float) -> DecisionPolicy:
        """From a version's `thresholds` and `cost_matrix` tags (absent: one threshold, default matrix)."""
        return cls(
            default, parse_thresholds(tags.get(THRESHOLDS_TAG)), parse_cost_matrix(tags.get(COST_MATRIX_TAG))
        )

    def threshold_for(self, machine_type: np.ndarray | pd.Series) -> np.ndarray:
        return threshold_array(machine_type, self.thresholds, self.default)
