"""One MLflow run per trained candidate: params, CV and holdout metrics, latency, plots and the model."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import pandas as pd
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from mfd.modeling.candidate import Candidate
from mfd.modeling.metrics import confusion
from mfd.modeling.model_io import log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.plots import draw_pr_curve, table_markdown
from mfd.schema import LABEL_COLUMN
from mfd.settings import Settings
from mfd.storage import tracking


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


def metrics(candidate: Candidate) -> dict[str, float]:
    """Everything measured about the candidate, flat: cv_*, holdout_*, latency and seconds."""
    return {
        **{f"cv_{k}": v for k, v in candidate.cv.items()},
        **{f"holdout_{k}": v for k, v in candidate.holdout_scores.items()},
        **candidate.latency,
        "threshold": candidate.threshold,
        "fit_seconds": candidate.fit_seconds,
        "train_seconds": candidate.seconds,
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
    """Log the candidate in a new MLflow run (ended FAILED if anything raises) and return where it is."""
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name or f"candidate-{candidate.family}"
    ) as run:
        mlflow.set_tags({**tags, "family": candidate.family})
        mlflow.log_params(
            {**settings, "family": candidate.family, **{f"param_{k}": v for k, v in candidate.params.items()}}
        )
        mlflow.log_metrics(metrics(candidate))
        for label, fig in (
            ("confusion_matrix", confusion_figure(candidate)),
            ("pr_curve", pr_curve_figure(candidate)),
        ):
            mlflow.log_figure(fig, f"plots/{label}.png")
            plt.close(fig)
        mlflow.log_text(table_markdown(candidate.families), "cv_by_family.md")
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
