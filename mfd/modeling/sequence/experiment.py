"""Sequence models in MLflow: a parent run for the window split, one nested run per architecture with its
params, test metrics, losses per epoch, loss + PR-curve plot and the network; plus the figures."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import mlflow
import numpy as np
from matplotlib.figure import Figure
from mlflow.models import infer_signature

from mfd.modeling.sequence.models import SequenceResult, SequenceSettings, comparison_table
from mfd.modeling.sequence.windows import WindowSplit
from mfd.plots import draw_pr_curve, table_markdown


def result_figure(result: SequenceResult) -> Figure:
    """Loss per epoch (train, validation) and the test PR curve with the chosen threshold marked."""
    fig = Figure(figsize=(8.4, 3.2))
    loss_ax, pr_ax = fig.subplots(1, 2)
    result.losses.plot(ax=loss_ax, marker="o")
    loss_ax.set(xlabel="epoch", ylabel="loss", title=f"{result.architecture}: loss")
    draw_pr_curve(
        pr_ax,
        result.test_y,
        result.test_score,
        f"PR AUC {result.scores['pr_auc']:.3f}",
        (result.scores["recall"], result.scores["precision"], f"threshold {result.threshold:.3g}"),
    )
    pr_ax.set_title("PR curve (test)")
    pr_ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def pr_curves_figure(results: list[SequenceResult]) -> Figure:
    """The test PR curves of every architecture on one plot."""
    fig = Figure(figsize=(4.8, 3.6))
    ax = fig.subplots()
    for r in results:
        draw_pr_curve(ax, r.test_y, r.test_score, f"{r.architecture} ({r.scores['pr_auc']:.3f})")
    ax.set_title("PR curves (test windows)")
    ax.legend(loc="lower left", fontsize=8)
    return fig


@dataclass(frozen=True)
class LoggedSequenceModels:
    """Where the parent run and each architecture's nested run are."""

    experiment_id: str
    parent_run_id: str
    run_ids: dict[str, str]


def _log_result(
    result: SequenceResult,
    sample: np.ndarray,
    experiment_id: str,
    params: dict[str, object],
    tags: dict[str, str],
) -> str:
    import torch

    from mfd.modeling.sequence.nets import score

    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"sequence-{result.architecture}", nested=True
    ) as run:
        mlflow.set_tags({**tags, "architecture": result.architecture})
        mlflow.log_params({**params, "architecture": result.architecture})
        mlflow.log_metrics(result.metrics())
        for epoch, losses in result.losses.iterrows():
            mlflow.log_metrics(losses.to_dict(), step=int(epoch))
        mlflow.log_figure(result_figure(result), f"plots/{result.architecture}.png")
        # pickle, not pt2: torch.export would fix the batch size the graph was traced with.
        mlflow.pytorch.log_model(
            result.network,
            name="model",
            serialization_format="pickle",
            signature=infer_signature(sample, score(result.network, sample)),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
    return run.info.run_id


def log_sequence_models(
    results: list[SequenceResult],
    split: WindowSplit,
    *,
    experiment_id: str,
    settings: SequenceSettings,
    params: dict[str, object],
    tags: dict[str, str],
) -> LoggedSequenceModels:
    """A parent run (split params and counts, comparison table, all PR curves) with one nested run per
    result; runs end FAILED if anything raises."""
    run_params = {**params, **asdict(settings)}
    with mlflow.start_run(experiment_id=experiment_id, run_name="sequence-models") as parent:
        mlflow.set_tags({**tags, "kind": "sequence_models"})
        mlflow.log_params({**run_params, "machines": split.machines, "rows_used": split.rows_used})
        mlflow.log_text(table_markdown(split.summary()), "windows_by_part.md")
        mlflow.log_text(table_markdown(comparison_table(results)), "comparison.md")
        mlflow.log_figure(pr_curves_figure(results), "plots/pr_curves.png")
        run_ids = {
            r.architecture: _log_result(r, split.test.x[:5], experiment_id, run_params, tags) for r in results
        }
    return LoggedSequenceModels(experiment_id, parent.info.run_id, run_ids)
