"""Live shadow evidence for the promotion gate: the champion (`predictions`) against a challenger version
(`shadow_predictions`, written by `mfd.detection.shadow`) on the readings both scored.

`shadow_evidence` reports how often they agree, alerts per machine-day, and PR AUC on the readings that
carry a label by now (their own or a maintenance record's). `judge_shadow` turns that table into a gate
verdict under a `ShadowGate`: enough readings, agreement, alert rate against the champion's, PR AUC on the
labelled readings no worse than the champion's by more than a margin.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from sklearn.metrics import average_precision_score
from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.preparation.labels import apply_maintenance_labels, read_maintenance
from mfd.schema import LABEL_COLUMN
from mfd.storage.tables import predictions, readings, shadow_predictions

BLOCK, HOLDOUT = "block", "holdout"
ON_INSUFFICIENT = (BLOCK, HOLDOUT)


def _side_by_side(engine: Engine, challenger: str) -> pd.DataFrame:
    """Readings scored by both the champion (`predictions`) and the challenger version (shadow)."""
    shadow_predictions.create(engine, checkfirst=True)
    predictions.create(engine, checkfirst=True)
    s, p, r = shadow_predictions.alias("s"), predictions.alias("p"), readings.alias("r")
    query = (
        sa.select(
            r.c.id,
            r.c.machine_id,
            r.c.timestamp,
            r.c[LABEL_COLUMN],
            p.c.model_version.label("champion_version"),
            p.c.probability.label("champion_probability"),
            p.c.label.label("champion_label"),
            s.c.probability.label("challenger_probability"),
            s.c.label.label("challenger_label"),
        )
        .select_from(s.join(p, p.c.reading_id == s.c.reading_id).join(r, r.c.id == s.c.reading_id))
        .where(s.c.model_version == challenger)
        .order_by(r.c.id)
    )
    with engine.connect() as conn:
        df = pd.read_sql(query, conn).rename(columns=str)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def shadowed_readings(engine: Engine, challenger: str) -> int:
    """Readings the challenger version has scored in the shadow (`shadow_predictions`)."""
    shadow_predictions.create(engine, checkfirst=True)
    query = sa.select(sa.func.count()).where(shadow_predictions.c.model_version == challenger)
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _pr_auc(labels: pd.Series, probability: pd.Series) -> float:
    y = labels.astype("int64")
    return float(average_precision_score(y, probability)) if y.nunique() == 2 else float("nan")


def shadow_evidence(engine: Engine, challenger: str, label_window: pd.Timedelta) -> pd.DataFrame:
    """Champion vs challenger `challenger` on the readings both scored: one row per model with readings,
    agreement, alerts, alerts per machine-day, labelled readings and PR AUC on them (NaN with one class)."""
    both = _side_by_side(engine, challenger)
    labelled = apply_maintenance_labels(both, read_maintenance(engine), label_window)
    machine_days = both.groupby([both["machine_id"], both["timestamp"].dt.floor("D")]).ngroups
    agreement = (
        float((both["champion_label"] == both["challenger_label"]).mean()) if len(both) else float("nan")
    )
    rows = {}
    for role in ("champion", "challenger"):
        alerts = int(both[f"{role}_label"].sum())
        version = challenger if role == "challenger" else ",".join(sorted(both["champion_version"].unique()))
        rows[f"{role} v{version}"] = {
            "readings": len(both),
            "machine_days": machine_days,
            "agreement": agreement,
            "alerts": alerts,
            "alerts_per_machine_day": alerts / machine_days if machine_days else float("nan"),
            "labelled_readings": len(labelled),
            "pr_auc_labelled": _pr_auc(labelled[LABEL_COLUMN], labelled[f"{role}_probability"])
            if len(labelled)
            else float("nan"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


@dataclass(frozen=True)
class ShadowGate:
    """What live shadow evidence a challenger needs before it may take over.

    `min_readings` readings scored by both are enough evidence; then the challenger must agree with the
    champion on at least `min_agreement` of them, raise at most `max_alert_rate_ratio` times the champion's
    alerts per machine-day (the champion's counted as at least one alert, so a silent champion does not
    refuse every alert), and, with at least `min_labelled` labelled readings of both classes, score a PR AUC
    on them no more than `pr_auc_margin` below the champion's. Too little evidence blocks the promotion
    (`block`) or leaves the decision to the holdout (`holdout`).
    """

    min_readings: int = 1000
    min_agreement: float = 0.9
    max_alert_rate_ratio: float = 1.5
    min_labelled: int = 200
    pr_auc_margin: float = 0.02
    on_insufficient: str = BLOCK
    label_window: pd.Timedelta = pd.Timedelta("2h")

    def __post_init__(self) -> None:
        if self.on_insufficient not in ON_INSUFFICIENT:
            raise MfdError(
                f"shadow gate: on_insufficient {self.on_insufficient!r} is not one of {', '.join(ON_INSUFFICIENT)}"
            )


@dataclass(frozen=True)
class ShadowVerdict:
    """The gate's reading of the evidence: enough of it, and whether the challenger passed (with why)."""

    sufficient: bool
    passed: bool
    reason: str
    evidence: pd.DataFrame


def _row(evidence: pd.DataFrame, role: str) -> pd.Series:
    return evidence.loc[[i for i in evidence.index if str(i).startswith(role)][0]]


def judge_shadow(evidence: pd.DataFrame, gate: ShadowGate) -> ShadowVerdict:
    """The verdict of `gate` on a `shadow_evidence` table (champion and challenger rows)."""
    champion, challenger = _row(evidence, "champion"), _row(evidence, "challenger")
    readings_ = int(challenger["readings"])
    if readings_ < gate.min_readings:
        return ShadowVerdict(
            False,
            False,
            f"shadow evidence insufficient: {readings_} readings scored by both (need {gate.min_readings})",
            evidence,
        )
    agreement = float(challenger["agreement"])
    machine_days = int(challenger["machine_days"])
    rate = float(challenger["alerts_per_machine_day"])
    champion_rate = max(int(champion["alerts"]), 1) / machine_days
    problems, figures = [], [f"{readings_} readings, {machine_days} machine-days"]
    figures.append(f"agreement {agreement:.4f} (min {gate.min_agreement})")
    if agreement < gate.min_agreement:
        problems.append(f"agreement {agreement:.4f} below {gate.min_agreement}")
    ratio = rate / champion_rate
    figures.append(
        f"alert rate {rate:.4g}/machine-day vs champion {float(champion['alerts_per_machine_day']):.4g} "
        f"({ratio:.2f}x, max {gate.max_alert_rate_ratio}x)"
    )
    if ratio > gate.max_alert_rate_ratio:
        problems.append(
            f"alert rate {rate:.4g}/machine-day is {ratio:.2f}x the champion's (max {gate.max_alert_rate_ratio}x)"
        )
    labelled = int(challenger["labelled_readings"])
    ours, theirs = float(challenger["pr_auc_labelled"]), float(champion["pr_auc_labelled"])
    if labelled < gate.min_labelled or math.isnan(ours) or math.isnan(theirs):
        figures.append(
            f"PR AUC not judged: {labelled} labelled readings (need {gate.min_labelled}, both classes)"
        )
    else:
        figures.append(
            f"PR AUC on {labelled} labelled {ours:.4f} vs {theirs:.4f} (margin {gate.pr_auc_margin})"
        )
        if ours < theirs - gate.pr_auc_margin:
            problems.append(
                f"PR AUC on labelled readings {ours:.4f} is below the champion's {theirs:.4f} by more "
                f"than {gate.pr_auc_margin}"
            )
    if problems:
        return ShadowVerdict(True, False, "shadow evidence against: " + "; ".join(problems), evidence)
    return ShadowVerdict(True, True, "shadow evidence passed: " + "; ".join(figures), evidence)


def shadow_verdict(engine: Engine, challenger: str, gate: ShadowGate) -> ShadowVerdict:
    """`judge_shadow` on the stored predictions of the champion and the shadow rows of `challenger`."""
    return judge_shadow(shadow_evidence(engine, challenger, gate.label_window), gate)
