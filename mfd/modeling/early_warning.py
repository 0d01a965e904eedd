"""Early warning as the training loop's objective: lead-time figures of a model's scores over machines'
readings in time order (`mfd.modeling.lead_time`), at the operating threshold of the active profile.

- The *operating threshold* is the model's threshold, never below the profile's `probability_floor`, raised
  (on out-of-fold predictions, never the holdout) until the false alarms per machine-day are within the
  profile's `false_alarm_budget` when it sets one (`budget_threshold`).
- Failures are read off the labels (`failures_from_labels`: a run of failure-labelled readings ends at the
  failure), so the same figures come from a training set, a holdout or out-of-fold predictions.
- `rank_by_lead`: where machines run to failure, `auto` picks the family whose out-of-fold predictions
  (grouped folds: a machine's predictions come from models that never saw it) warn the most failures at
  least `lead` ahead, within the false-alarm budget, then the fewest false alarms, then the longest median
  lead; PR AUC decides only ties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure

from mfd.modeling.lead_time import SCORE, LeadTime, alarming, failures_from_labels, lead_time
from mfd.profiles import MACHINE, TIMESTAMP
from mfd.schema import LABEL_COLUMN, PROFILE

KEYS: tuple[str, ...] = (MACHINE, TIMESTAMP)
# The figures every candidate gets, as MLflow metrics and version tags (prefix `lead_`).
LEAD_FIGURES: tuple[str, ...] = (
    "share_warned",
    "median_lead_hours",
    "false_alarms_per_machine_day",
    "precision_per_alarm",
    "failures",
)
SHARE_WARNED, FALSE_ALARMS = "lead_share_warned", "lead_false_alarms_per_machine_day"
# Differences in the lead-time figures smaller than this are ties (float noise).
LEAD_TOLERANCE = 1e-9
# Thresholds tried when the false-alarm budget raises the operating threshold.
_BUDGET_GRID = 60


def has_keys(frame: pd.DataFrame) -> bool:
    return set(KEYS) <= set(frame.columns)


def operating_threshold(threshold: float) -> float:
    """`threshold`, never below the profile's probability floor."""
    return max(float(threshold), PROFILE.probability_floor)


def lead_of(frame: pd.DataFrame, proba: np.ndarray, threshold: float) -> LeadTime:
    """The lead-time figures of `proba` on `frame`'s readings (machine_id, timestamp, label; NaN scores left
    out) at `operating_threshold(threshold)`, the profile's horizon, lead and debounce."""
    scored = np.isfinite(np.asarray(proba, dtype="float64"))
    rows = frame.loc[scored, [*KEYS, LABEL_COLUMN]].assign(**{SCORE: np.asarray(proba)[scored]})
    failures = failures_from_labels(rows, LABEL_COLUMN, PROFILE.horizon)
    return lead_time(
        rows,
        failures,
        threshold=operating_threshold(threshold),
        horizon=PROFILE.horizon,
        lead=PROFILE.warning_lead,
        k=PROFILE.debounce,
    )


def figures(result: LeadTime) -> dict[str, float]:
    """The LEAD_FIGURES of `result`, flat, prefixed `lead_`."""
    values = result.as_dict()
    return {f"lead_{k}": float(values[k]) for k in LEAD_FIGURES}


def budget_threshold(frame: pd.DataFrame, proba: np.ndarray, threshold: float) -> float:
    """The operating threshold: `threshold` at the probability floor, raised to the lowest value whose false
    alarms per machine-day on (`frame`, `proba`) are within the profile's budget (none set: unchanged)."""
    base = operating_threshold(threshold)
    budget = PROFILE.false_alarm_budget
    if budget is None or not has_keys(frame):
        return base
    if _false_alarms(frame, proba, base) <= budget:
        return base
    for candidate in np.linspace(base, 1.0, _BUDGET_GRID)[1:]:
        if _false_alarms(frame, proba, float(candidate)) <= budget:
            return float(candidate)
    return 1.0


def _false_alarms(frame: pd.DataFrame, proba: np.ndarray, threshold: float) -> float:
    value = lead_of(frame, proba, threshold).false_alarms_per_machine_day
    return 0.0 if math.isnan(value) else value


@dataclass(frozen=True)
class Ranked:
    family: str
    lead: LeadTime


def _key(item: Ranked, objective: float) -> tuple[float, ...]:
    lead = item.lead
    budget = PROFILE.false_alarm_budget
    fa = 0.0 if math.isnan(lead.false_alarms_per_machine_day) else lead.false_alarms_per_machine_day
    within = 1.0 if budget is None or fa <= budget else 0.0
    share = 0.0 if math.isnan(lead.share_warned) else lead.share_warned
    median = 0.0 if math.isnan(lead.median_lead_hours) else lead.median_lead_hours
    return (within, share, -fa, median, objective)


def rank_by_lead(leads: dict[str, LeadTime], objectives: dict[str, float]) -> list[str]:
    """The families of `leads` best first (see the module doc)."""
    items = [Ranked(f, lead) for f, lead in leads.items()]
    ordered = sorted(items, key=lambda r: _key(r, objectives.get(r.family, 0.0)), reverse=True)
    return [r.family for r in ordered]


def table(leads: dict[str, LeadTime]) -> pd.DataFrame:
    """One row per model: its lead-time figures."""
    rows = {
        name: {k.removeprefix("lead_"): v for k, v in figures(lead).items()} for name, lead in leads.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("model")


def risk_figure(frame: pd.DataFrame, proba: np.ndarray, threshold: float, machines: int = 4) -> Figure:
    """Risk over time of up to `machines` failing machines of `frame`, with the operating threshold, their
    alarms (debounced) and their failures."""
    rows = frame[[*KEYS, LABEL_COLUMN]].assign(**{SCORE: np.asarray(proba, dtype="float64")})
    failures = failures_from_labels(rows, LABEL_COLUMN, PROFILE.horizon)
    chosen = list(pd.unique(failures[MACHINE].astype(str)))[:machines]
    operating = operating_threshold(threshold)
    fig, axes = plt.subplots(max(len(chosen), 1), 1, figsize=(7, 1.6 * max(len(chosen), 1)), squeeze=False)
    for ax, machine in zip(axes[:, 0], chosen, strict=False):
        group = rows[rows[MACHINE].astype(str) == machine].sort_values(TIMESTAMP)
        times = pd.to_datetime(group[TIMESTAMP], utc=True)
        ax.plot(times, group[SCORE], lw=1, label="risk")
        ax.axhline(operating, color="grey", ls="--", lw=0.8, label="threshold")
        on = alarming(group[SCORE].to_numpy(), operating, PROFILE.debounce)
        ax.scatter(times[on], group[SCORE][on], s=6, color="tab:red", label="alarm")
        for at in failures.loc[failures[MACHINE].astype(str) == machine, TIMESTAMP]:
            ax.axvline(pd.Timestamp(at, tz="UTC"), color="black", lw=1.2, label="failure")
        ax.set(ylim=(-0.02, 1.02), ylabel=machine)
    if not chosen:
        axes[0, 0].set_title("no failing machine in the holdout")
    axes[0, 0].legend(loc="upper left", fontsize="x-small", ncols=4)
    fig.suptitle("Risk over time (holdout machines that failed)", fontsize="small")
    fig.tight_layout()
    return fig


def lead_verdict(challenger: dict[str, float], champion: dict[str, float]) -> tuple[bool, str]:
    """Whether the challenger is no worse than the champion on lead time: at least the champion's share of
    failures warned ahead, at no more false alarms per machine-day. Passes when either has no figures
    (no machine and time in the holdout, or no failure in it)."""
    keys = (SHARE_WARNED, FALSE_ALARMS)
    if not all(np.isfinite(d.get(k, np.nan)) for d in (challenger, champion) for k in keys):
        return True, "no lead-time figures to compare"
    figures_ = (
        f"warned {challenger[SHARE_WARNED]:.3f} vs {champion[SHARE_WARNED]:.3f}, false alarms per "
        f"machine-day {challenger[FALSE_ALARMS]:.4f} vs {champion[FALSE_ALARMS]:.4f}"
    )
    if challenger[SHARE_WARNED] < champion[SHARE_WARNED] - LEAD_TOLERANCE:
        return False, f"champion kept: the challenger warns fewer failures in time ({figures_})"
    if challenger[FALSE_ALARMS] > champion[FALSE_ALARMS] + LEAD_TOLERANCE:
        return False, f"champion kept: the challenger raises more false alarms ({figures_})"
    return True, f"lead time no worse ({figures_})"
