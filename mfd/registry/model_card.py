"""The model card of a registered version: markdown a maintenance lead can read before trusting it.

Data version and sources, augmentation, holdout metrics overall and per machine type, calibration, the
cost matrix and thresholds per type, shifted-holdout scores where the run logged them, and the known
limitations. Attached to the version as an MLflow artifact of its run (`model_card.md`), as the version's
description, and returned for the `champion_model` metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.metrics import brier_score_loss

from mfd.alerts.costs import CostMatrix, ThresholdChoice
from mfd.modeling.metrics import scores
from mfd.plots import table_markdown
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, MACHINE_TYPES, PROFILE

CARD_ARTIFACT = "model_card.md"
CARD_TAG = "model_card"
CALIBRATION_BINS = 10
# MLflow's registry keeps a version description in a 5,000-character column (PostgreSQL refuses longer).
DESCRIPTION_LIMIT = 5000
# Run metrics that are scores on a shifted holdout (noisy sensors, another source, label noise).
_SHIFTED_MARKERS = ("noisy", "shift", "cross", "label_noise")

LIMITATIONS = (
    f"The failure-mode columns ({', '.join(FAILURE_MODE_COLUMNS)}) are never inputs: they are consequences "
    "of a failure and leak the label.",
    "The AI4I 2020 reference data has known mislabelled rows (mfd/data/README.md): 18 of its 19 RNF flags "
    "have `Machine failure` = 0, and 9 rows have `Machine failure` = 1 with no failure mode set. Scores on "
    "it carry that label noise.",
    "AI4I's failure rules are exact thresholds on the sensors; a plant whose sensors are noisier or whose "
    "limits differ will see lower scores than the clean holdout's (see the shifted holdouts, if any).",
    "One reading per prediction: sequence context only through the profile's machine-window features (none "
    "for snapshot data), so the late-alarm cost and the lead-time figures are only counted where readings "
    "of one machine form a series.",
)


@dataclass(frozen=True)
class CardInputs:
    """What the card is written from (besides the version's run in MLflow)."""

    name: str
    version: str
    holdout: pd.DataFrame  # labelled rows with machine_type
    proba: np.ndarray  # the version's probabilities on them
    threshold: float
    thresholds: Mapping[str, float] = field(default_factory=dict)
    choices: Mapping[str, ThresholdChoice] = field(default_factory=dict)
    cost_matrix: CostMatrix | None = None
    decision: str = ""
    early_warning: Mapping[str, float] = field(default_factory=dict)  # the version's lead_* and rul_* scores


def calibration_table(y: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> pd.DataFrame:
    """Mean predicted probability against the observed failure rate per probability bin (non-empty bins)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(proba, edges[1:-1]), 0, bins - 1)
    frame = pd.DataFrame({"bin": which, "p": proba, "y": y})
    table = frame.groupby("bin").agg(rows=("y", "size"), predicted=("p", "mean"), observed=("y", "mean"))
    table.index = [f"{edges[i]:.1f}-{edges[i + 1]:.1f}" for i in table.index]
    return table


def expected_calibration_error(y: np.ndarray, proba: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    table = calibration_table(y, proba, bins)
    return float((table["rows"] * (table["predicted"] - table["observed"]).abs()).sum() / len(y))


def per_type_scores(inputs: CardInputs) -> pd.DataFrame:
    """Holdout scores overall and per machine type, each at the threshold detection uses for it."""
    y = inputs.holdout[LABEL_COLUMN].astype("int64").to_numpy()
    types = inputs.holdout["machine_type"].astype(str).to_numpy()
    rows = {"all": {**scores(y, inputs.proba, inputs.threshold), "rows": len(y), "failures": int(y.sum())}}
    for machine_type in MACHINE_TYPES:
        mask = types == machine_type
        if mask.sum() == 0 or len(np.unique(y[mask])) < 2:
            continue
        threshold = inputs.thresholds.get(machine_type, inputs.threshold)
        rows[machine_type] = {
            **scores(y[mask], inputs.proba[mask], threshold),
            "rows": int(mask.sum()),
            "failures": int(y[mask].sum()),
        }
    return pd.DataFrame.from_dict(rows, orient="index")


def _run_facts(
    client: MlflowClient, run_id: str | None
) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    if not run_id:
        return {}, {}, {}
    data = client.get_run(run_id).data
    return dict(data.tags), dict(data.params), dict(data.metrics)


def _costs_table(inputs: CardInputs) -> str:
    if inputs.cost_matrix is None:
        return "No cost matrix: one threshold for every machine type (F1-best on validation folds)."
    rows = {}
    for machine_type, costs in inputs.cost_matrix.items():
        choice = inputs.choices.get(machine_type)
        rows[machine_type] = {
            "missed_failure": costs.missed_failure,
            "false_stop": costs.false_stop,
            "late_alarm": costs.late_alarm,
            "threshold": inputs.thresholds.get(machine_type, inputs.threshold),
            "validation_cost": choice.expected_cost if choice else np.nan,
            "validation_cost_no_model": choice.cost_no_model if choice else np.nan,
            "chosen_on": ("all rows (few failures)" if choice.pooled else "its rows") if choice else "-",
        }
    return table_markdown(pd.DataFrame.from_dict(rows, orient="index"))


def _early_warning(inputs: CardInputs) -> list[str]:
    """The lead-time and RUL figures on the holdout's machines, with the settings they were measured at."""
    figures = {k: v for k, v in inputs.early_warning.items() if k.startswith(("lead_", "rul_"))}
    if not figures:
        return ["No machine and time in the holdout: no lead-time figures (snapshot readings)."]
    lead = PROFILE.warning_lead / pd.Timedelta(hours=1)
    floor = PROFILE.probability_floor
    budget = PROFILE.false_alarm_budget
    return [
        f"Holdout machines in time order, at the operating threshold {max(inputs.threshold, floor):.4f} (probability"
        f" floor {floor:g}; false-alarm budget {'none' if budget is None else f'{budget:g} per machine-day'}), "
        f"horizon {PROFILE.horizon}, an alarm after {PROFILE.debounce} reading(s) in a row above it; a failure "
        f"is warned when an alarm comes at least {lead:g} h before it. RUL errors in hours against the target "
        "capped at the profile's `rul_cap`.",
        table_markdown(pd.Series(figures, name="value").sort_index().to_frame()),
    ]


def build_card(inputs: CardInputs, client: MlflowClient | None = None, run_id: str | None = None) -> str:
    """The card as markdown."""
    tags, params, metrics = _run_facts(client, run_id) if client is not None else ({}, {}, {})
    y = inputs.holdout[LABEL_COLUMN].astype("int64").to_numpy()
    augmentation = {k: v for k, v in params.items() if "augment" in k or "jitter" in k}
    shifted = {k: v for k, v in metrics.items() if any(m in k for m in _SHIFTED_MARKERS)}
    lines = [
        f"# Model card: {inputs.name} version {inputs.version}",
        "",
        f"- family: {tags.get('family', params.get('family', 'unknown'))}",
        f"- MLflow run: {run_id or 'unknown'}",
        f"- decision: {inputs.decision or 'not evaluated'}",
        "",
        "## Data",
        f"- training set: {tags.get('training_set', 'unknown')} (version {tags.get('training_set_version', 'unknown')})",
        f"- training set run: {tags.get('training_set_run_id') or 'unknown'}; holdout run: {tags.get('holdout_run_id') or 'unknown'}",
        f"- holdout: {len(y)} labelled rows, {int(y.sum())} failures (never used for tuning or fitting)",
        "- augmentation: "
        + (
            ", ".join(f"{k}={v}" for k, v in sorted(augmentation.items()))
            if augmentation
            else "none recorded"
        ),
        "",
        "## Holdout metrics (overall and per machine type, at the threshold used for each)",
        table_markdown(per_type_scores(inputs)),
        "",
        "## Calibration (holdout)",
        f"- Brier score {brier_score_loss(y, inputs.proba):.4f}; expected calibration error "
        f"{expected_calibration_error(y, inputs.proba):.4f}",
        table_markdown(calibration_table(y, inputs.proba)),
        "",
        "## Early warning (holdout machines)",
        *_early_warning(inputs),
        "",
        "## Costs and thresholds",
        _costs_table(inputs),
        "",
        "## Shifted holdouts",
        table_markdown(pd.Series(shifted, name="value").sort_index().to_frame())
        if shifted
        else "None logged for this run.",
        "",
        "## Known limitations",
        *(f"- {text}" for text in LIMITATIONS),
        "",
    ]
    return "\n".join(lines)


def description(card: str, run_id: str | None, version: str) -> str:
    """`card`, or its beginning and where the whole card is when it is longer than the registry holds."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    where = f"runs:/{run_id}/model_card/v{version}/{CARD_ARTIFACT}" if run_id else "the version's run"
    note = f"\n\n(cut at {DESCRIPTION_LIMIT:,} characters: the whole card is {where})\n"
    return card[: DESCRIPTION_LIMIT - len(note)] + note


def attach_card(client: MlflowClient, name: str, version: str, run_id: str | None, card: str) -> None:
    """The card as the version's description (cut to what the registry holds, DESCRIPTION_LIMIT, pointing at
    the artifact), tag `model_card`, and (with a run) artifact `model_card.md` in full."""
    client.update_model_version(name, version, description=description(card, run_id, version))
    if run_id:
        client.log_text(run_id, card, f"model_card/v{version}/{CARD_ARTIFACT}")
        client.set_model_version_tag(
            name, version, CARD_TAG, f"runs:/{run_id}/model_card/v{version}/{CARD_ARTIFACT}"
        )
    else:
        client.set_model_version_tag(name, version, CARD_TAG, "description")
