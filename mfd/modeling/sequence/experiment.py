"""Sequence models in MLflow: a parent run for the window split, one nested run per architecture with its
params, test metrics, losses per epoch, loss + PR-curve plot and the network; plus the figures."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import mlflow
import numpy as np
from matplotlib.figure import Figure
from mlflow.models import infer_signature

from mfd.modeling.sequence.models import SequenceResult, SequenceSettings, comparison_table
from mfd.modeling.sequence.windows import WindowSplit
from mfd.plots import draw_pr_curve, table_markdown

# What logging one architecture's nested run (figure, network) takes, about, until one has been logged;
# and what the parent run's comparison and PR curves plus the step's own plot take.
SEQUENCE_LOG_RESERVE_S = 1.5
SEQUENCE_FINISH_RESERVE_S = 1.5


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


class SequenceRuns:
    """The parent run of a sequence-models step, open while the architectures train: `log` adds each
    result's nested run as soon as it is trained (so a step's budget sees what logging costs), `finish`
    the comparison table and all PR curves; `log_s` is the mean seconds one `log` took (None before)."""

    def __init__(
        self,
        split: WindowSplit,
        *,
        experiment_id: str,
        settings: SequenceSettings,
        params: dict[str, object],
        tags: dict[str, str],
    ) -> None:
        self.split, self.experiment_id, self.tags = split, experiment_id, tags
        self.params = {**params, **asdict(settings)}
        self.run_ids: dict[str, str] = {}
        self._log_seconds: list[float] = []

    def __enter__(self) -> SequenceRuns:
        self._parent = mlflow.start_run(experiment_id=self.experiment_id, run_name="sequence-models")
        mlflow.set_tags({**self.tags, "kind": "sequence_models"})
        mlflow.log_params({**self.params, "machines": self.split.machines, "rows_used": self.split.rows_used})
        mlflow.log_text(table_markdown(self.split.summary()), "windows_by_part.md")
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        mlflow.end_run("FAILED" if error is not None else "FINISHED")

    @property
    def log_s(self) -> float | None:
        return float(np.mean(self._log_seconds)) if self._log_seconds else None

    def log(self, result: SequenceResult) -> str:
        started = time.perf_counter()
        run_id = _log_result(result, self.split.test.x[:5], self.experiment_id, self.params, self.tags)
        self.run_ids[result.architecture] = run_id
        self._log_seconds.append(time.perf_counter() - started)
        return run_id

    def finish(self, results: list[SequenceResult]) -> LoggedSequenceModels:
        mlflow.log_text(table_markdown(comparison_table(results)), "comparison.md")
        mlflow.log_figure(pr_curves_figure(results), "plots/pr_curves.png")
        return LoggedSequenceModels(self.experiment_id, self._parent.info.run_id, dict(self.run_ids))


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
    with SequenceRuns(
        split, experiment_id=experiment_id, settings=settings, params=params, tags=tags
    ) as runs:
        for result in results:
            runs.log(result)
        return runs.finish(results)
