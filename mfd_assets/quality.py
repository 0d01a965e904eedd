"""Quality group: the grid-searched classifier panel on raw, cleaned, noise-jittered and each augmented
training set, scored on the holdout and on its noisy and label-noise copies."""

import json
from dataclasses import replace

import dagster as dg
import pandas as pd
from pydantic import Field

from mfd.errors import MfdError
from mfd.modeling.budget import Spent
from mfd.modeling.holdout import assert_disjoint, without_holdout
from mfd.modeling.robust import Robustness
from mfd.modeling.shifts import LabelNoise, NoiseLevels, ShiftConfig, shifted_holdouts
from mfd.plots import png_markdown
from mfd.quality.panel import (
    CLASSIFIERS,
    DEFAULT_GRIDS,
    DEFAULT_MAX_TRAIN_ROWS,
    PanelConfig,
    bar_chart,
    lift_summary,
    run_panel,
)
from mfd_assets.metadata import rounded
from mfd_assets.metadata import table as table_metadata
from mfd_resources import ObjectStore

REPORT_KEY = "reports/quality_scores.csv"
# Of the step's budget, kept for the CSV report and the chart after the panel.
REPORT_RESERVE_S = 2.0


class QualityConfig(dg.Config):
    classifiers: list[str] = Field(list(CLASSIFIERS), description=f"any of {list(CLASSIFIERS)}")
    grids: dict[str, str] = Field(
        {},
        description='per classifier, a JSON object replacing its default grid, e.g. {"KNN": '
        '"{\\"n_neighbors\\": [5, 9]}"}',
    )
    folds: int = Field(3, description="stratified CV folds of the grid search")
    time_budget_s: float = Field(
        30.0,
        description="wall-time budget of the step, the panel's share spread over the training sets; a search "
        "that would not end within its set's share is skipped",
    )
    n_jobs: int = Field(2, description="parallel CV fits per grid search")
    seed: int = Field(0, description="seed of the CV splits, subsamples and seeded classifiers")
    max_train_rows: dict[str, int] = Field(
        dict(DEFAULT_MAX_TRAIN_ROWS), description="slow classifiers train on a stratified subsample this big"
    )
    jitter_copies: int = Field(
        2, description="the `jitter` set: cleaned rows plus this many noise-jittered copies (0: no such set)"
    )
    noise_seed: int = Field(NoiseLevels.seed, description="seed of the noisy holdout and the jitter")
    label_seed: int = Field(LabelNoise.seed, description="seed of the label-noise holdout")

    def panel(self) -> PanelConfig:
        grids = {name: dict(grid) for name, grid in DEFAULT_GRIDS.items()}
        for name, text in self.grids.items():
            try:
                grids[name] = json.loads(text)
            except json.JSONDecodeError as exc:
                raise MfdError(f"grids[{name!r}] is not a JSON object of parameter lists: {exc}") from exc
        return PanelConfig(
            classifiers=tuple(self.classifiers),
            grids=grids,
            folds=self.folds,
            time_budget_s=self.time_budget_s,
            n_jobs=self.n_jobs,
            seed=self.seed,
            max_train_rows=self.max_train_rows,
        )


@dg.asset(group_name="quality")
def quality_scores(
    context: dg.AssetExecutionContext,
    config: QualityConfig,
    object_store: ObjectStore,
    training_set: pd.DataFrame,
    cleaned_set: pd.DataFrame,
    holdout: pd.DataFrame,
    augmented_gan: pd.DataFrame,
    augmented_oversampling: pd.DataFrame,
    augmented_corruption: pd.DataFrame,
) -> dg.Output[pd.DataFrame]:
    """Holdout ROC AUC, PR AUC and F1, fit / predict time and best params of each classifier on each
    training set, all scored on the same untouched holdout of real rows, within time_budget_s (the whole
    step; budget vs spent per phase in metadata)."""
    spent = Spent(config.time_budget_s)
    panel = replace(config.panel(), time_budget_s=max(config.time_budget_s - REPORT_RESERVE_S, 0.0))
    held = frozenset(int(i) for i in holdout["id"])
    train_sets = {
        "raw": without_holdout(training_set, held),
        "cleaned": without_holdout(cleaned_set, held),
        "gan": augmented_gan,
        "oversampling": augmented_oversampling,
        "corruption": augmented_corruption,
    }
    noise = NoiseLevels(seed=config.noise_seed)
    if config.jitter_copies:
        jitter = Robustness(noise=noise, jitter_copies=config.jitter_copies)
        train_sets["jitter"] = jitter.jittered(train_sets["cleaned"], seed=config.seed)
    for name in ("gan", "oversampling", "corruption"):
        assert_disjoint(train_sets[name], held, f"augmented_{name}")
    shifts = ShiftConfig(noise=noise, label=LabelNoise(seed=config.label_seed), cross=None)
    shifted = {k: v for k, v in shifted_holdouts(holdout, shifts).items() if k != "clean"}
    with spent.phase("panel"):
        table = run_panel(train_sets, holdout, panel, log=context.log.info, shifted=shifted)
    with spent.phase("report"):
        objects = object_store.objects()
        objects.put(REPORT_KEY, table.to_csv(index=False).encode())
        chart = png_markdown(bar_chart(table), "holdout PR AUC")
    shown = table.drop(columns=["best_params"]).set_index(["dataset", "classifier"])
    notes = table["note"].fillna("")
    context.log.info("quality_scores %s", spent.line())
    return dg.Output(
        table,
        metadata=rounded(
            {
                **spent.record(),
                "budget": table_metadata(spent.table()),
                "scores": table_metadata(shown, digits=3),
                "pr_auc_chart": dg.MetadataValue.md(chart),
                "lift_over_raw": table_metadata(lift_summary(table), digits=3),
                "best_params": table_metadata(table[["dataset", "classifier", "best_params"]]),
                "csv": dg.MetadataValue.path(f"{objects.describe()}: {REPORT_KEY}"),
                "holdout_rows": dg.MetadataValue.int(len(holdout)),
                "holdout_failures": dg.MetadataValue.int(int(holdout["machine_failure"].astype(int).sum())),
                "subsampled": dg.MetadataValue.text(
                    "; ".join(f"{k}: at most {v} training rows" for k, v in panel.max_train_rows.items())
                    or "none"
                ),
                "skipped_for_time_budget": dg.MetadataValue.int(int(notes.str.startswith("skipped").sum())),
                "time_budget_s": dg.MetadataValue.float(config.time_budget_s),
                "search_s_total": dg.MetadataValue.float(float(table["search_s"].fillna(0).sum())),
                "shift_settings": dg.MetadataValue.json(shifts.record()),
                "failed_to_fit": dg.MetadataValue.int(int(notes.str.startswith("failed").sum())),
                "seed": dg.MetadataValue.int(config.seed),
                "dagster/row_count": dg.MetadataValue.int(len(table)),
            }
        ),
    )
