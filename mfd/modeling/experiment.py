"""One MLflow run per trained candidate: params (incl. objective, noise levels and seeds), CV, holdout and
shifted-holdout metrics, Brier scores, latency, plots (confusion, PR curve, clean vs shifted per family,
reliability) and the model."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from mfd.modeling.calibration import reliability_figure
from mfd.modeling.candidate import Candidate
from mfd.modeling.early_warning import risk_figure
from mfd.modeling.metrics import METRICS, confusion
from mfd.modeling.model_io import log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.plots import draw_pr_curve, table_markdown
from mfd.schema import LABEL_COLUMN, PROFILE
from mfd.settings import Settings
from mfd.storage import tracking

# What a candidate's MLflow logging (plots, tables, the model) and its asset's plots take, about: the
# candidate's time budget keeps it.
LOG_RESERVE_S = 6.0


def confusion_figure(candidate: Candidate) -> Figure:
    """Confusion matrix of the candidate on its holdout at its threshold."""
    matrix = confusion(
        candidate.holdout[LABEL_COLUMN].to_numpy(), candidate.holdout_proba, candidate.threshold
    )
    fig, ax = plt.subplots(figsize=(3.6, 3.2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in pd.DataFrame(matrix).stack().items():
        ax.text(j, i, str(count), ha="center", va="center", color="black" if i != j else "white")
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["ok", "failure"],
        yticklabels=["ok", "failure"],
        xlabel="predicted",
        ylabel="true",
        title=f"{candidate.family} @ {candidate.threshold:.3f} (holdout)",
    )
    return fig


def pr_curve_figure(candidate: Candidate) -> Figure:
    """Precision-recall curve on the holdout, with the chosen threshold marked."""
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    scores = candidate.holdout_scores
    draw_pr_curve(
        ax,
        candidate.holdout[LABEL_COLUMN].to_numpy(),
        candidate.holdout_proba,
        f"PR AUC {scores['pr_auc']:.3f}",
        (scores["recall"], scores["precision"], f"threshold {candidate.threshold:.3f}"),
    )
    ax.set_title("PR curve (holdout)")
    ax.legend(loc="lower left")
    return fig


def shift_figure(candidate: Candidate, metric: str = "pr_auc") -> Figure:
    """Grouped bars: per family, its `metric` on the clean holdout and on each shifted holdout."""
    pivot = candidate.shifted.pivot(index="family", columns="shift", values=metric)
    pivot = pivot.reindex(
        index=candidate.shifted["family"].unique(), columns=candidate.shifted["shift"].unique()
    )
    fig, ax = plt.subplots(figsize=(8, 3.6))
    pivot.plot.bar(ax=ax, width=0.8, rot=0)
    ax.set(ylim=(0, 1), ylabel=metric.replace("_", " ").upper(), title="Clean vs shifted holdouts by family")
    ax.legend(title="holdout", ncols=len(pivot.columns), loc="upper left", fontsize="small")
    return fig


def calibration_figure(candidate: Candidate) -> Figure:
    """Reliability diagram of the candidate on its holdout, before and after calibration."""
    y = candidate.holdout[LABEL_COLUMN].to_numpy()
    curves = {"calibrated": candidate.holdout_proba}
    if candidate.calibration.get("method", "none") != "none":
        curves = {"uncalibrated": candidate.calibration["holdout_proba_uncalibrated"], **curves}
    return reliability_figure(y, curves)


def lead_figure(candidate: Candidate) -> Figure:
    """Risk over time of a few failing holdout machines, with the candidate's alarms."""
    return risk_figure(candidate.holdout, candidate.holdout_proba, candidate.threshold)


def shift_metrics(candidate: Candidate) -> dict[str, float]:
    """The chosen family's scores on each shifted holdout, flat: `shift_noisy_pr_auc`, ..."""
    rows = candidate.shifted[candidate.shifted["family"] == candidate.family]
    name = {"ai4i->fleet": "ai4i_to_fleet", "fleet->ai4i": "fleet_to_ai4i"}
    return {
        f"shift_{name.get(r['shift'], r['shift'])}_{k}": float(r[k])
        for _, r in rows.iterrows()
        for k in METRICS
    }


def metrics(candidate: Candidate) -> dict[str, float]:
    """Everything measured about the candidate, flat: cv_*, holdout_*, shift_*, Brier, latency and seconds."""
    return {
        **{f"cv_{k}": v for k, v in candidate.cv.items()},
        **{f"holdout_{k}": v for k, v in candidate.holdout_scores.items()},
        **{f"holdout_{k}": v for k, v in candidate.lead_scores.items()},
        **{f"holdout_{k}": v for k, v in candidate.rul_scores.items()},
        **shift_metrics(candidate),
        **{k: v for k, v in candidate.calibration.items() if k.startswith("holdout_brier")},
        **candidate.latency,
        **{f"budget_{k}": v for k, v in candidate.budget.items()},
        **{f"step_{k}": v for k, v in candidate.spent.record().items()},
        "threshold": candidate.threshold,
        "fit_seconds": candidate.fit_seconds,
        "train_seconds": candidate.seconds,
    }


def run_params(candidate: Candidate) -> dict[str, object]:
    """The objective, jitter, calibration and every shift level and seed the candidate was made with."""
    return {
        **candidate.robustness.record(),
        "calibration": candidate.calibration.get("method", "none"),
        "selected_by": candidate.selected_by,
        "lead_hours": PROFILE.warning_lead / pd.Timedelta(hours=1),
        "debounce": PROFILE.debounce,
        "probability_floor": PROFILE.probability_floor,
        "false_alarm_budget": PROFILE.false_alarm_budget,
        **{f"shift_{k}": v for k, v in candidate.shifts.record().items()},
    }


@dataclass(frozen=True)
class LoggedCandidate:
    """A candidate and where its MLflow run and (not yet registered) model are."""

    candidate: Candidate
    run_id: str
    experiment_id: str
    model_uri: str


def log_candidate(
    candidate: Candidate,
    *,
    experiment_id: str,
    settings: dict[str, object],
    tags: dict[str, str],
    run_name: str | None = None,
) -> LoggedCandidate:
    """Log the candidate in a new MLflow run (ended FAILED if anything raises) and return where it is. The
    run starts when the candidate's training started (`candidate.spent.started_at`), so its duration in
    MLflow is the training's and the logging's."""
    name = run_name or f"candidate-{candidate.family}"
    created = MlflowClient().create_run(
        experiment_id,
        start_time=int(candidate.spent.started_at * 1000),
        tags=resolve_tags({MLFLOW_RUN_NAME: name}),
        run_name=name,
    )
    with mlflow.start_run(run_id=created.info.run_id) as run:
        mlflow.set_tags({**tags, "family": candidate.family, "profile": PROFILE.stamp()})
        mlflow.log_params(
            {
                **settings,
                **run_params(candidate),
                "family": candidate.family,
                **{f"param_{k}": v for k, v in candidate.params.items()},
            }
        )
        mlflow.log_metrics(metrics(candidate))
        for label, fig in (
            ("confusion_matrix", confusion_figure(candidate)),
            ("pr_curve", pr_curve_figure(candidate)),
            ("shifted_holdouts", shift_figure(candidate)),
            ("reliability", calibration_figure(candidate)),
        ):
            mlflow.log_figure(fig, f"plots/{label}.png")
            plt.close(fig)
        mlflow.log_text(table_markdown(candidate.families), "cv_by_family.md")
        if len(candidate.lead):
            mlflow.log_text(table_markdown(candidate.lead), "lead_time_by_family.md")
            fig = lead_figure(candidate)
            mlflow.log_figure(fig, "plots/risk_over_time.png")
            plt.close(fig)
        for shift in candidate.shifted["shift"].unique():
            name = shift.replace("->", "_to_")
            mlflow.log_text(table_markdown(candidate.shift_table(shift)), f"holdouts/{name}.md")
        model_uri, _ = log_failure_model(
            candidate.pipeline, candidate.holdout[list(MODEL_INPUT_COLUMNS)], threshold=candidate.threshold
        )
    return LoggedCandidate(candidate, run.info.run_id, experiment_id, model_uri)


def run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The run's page in the MLflow UI (for a local store: the `mlflow ui` default address)."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}"


def tracking_from_settings(settings: Settings, experiment: str = "mfd") -> tuple[MlflowClient, str]:
    """Connected client (retries; ServiceUnavailable names MFD_MLFLOW_TRACKING_URI) and the experiment id,
    the same place the Dagster `Tracking` resource writes to."""
    client = tracking.connect(settings.tracking_uri)
    location = None if settings.mlflow_tracking_uri else settings.artifacts_dir.as_uri()
    return client, tracking.experiment_id(client, experiment, location)
