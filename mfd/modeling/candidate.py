"""The candidate model: the best tuned family refit on the training rows and scored on the shared holdout
(`mfd.modeling.holdout`), rows no trial and no fit ever saw."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from mfd.errors import MfdError
from mfd.modeling.families import check_family
from mfd.modeling.holdout import assert_disjoint, holdout_split
from mfd.modeling.metrics import latency, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.modeling.training_data import labelled, trainability_problem
from mfd.modeling.tuning import Tuned, fit_pipeline, tune_families
from mfd.schema import LABEL_COLUMN


@dataclass
class Candidate:
    """A trained candidate: the pipeline (fit on the tuning rows only), its threshold, its CV scores, and
    its scores on a holdout no trial and no fit ever saw (kept so the champion can be judged on it too)."""

    family: str
    params: dict[str, Any]
    threshold: float
    pipeline: Pipeline
    cv: dict[str, float]
    holdout_scores: dict[str, float]
    holdout: pd.DataFrame
    families: pd.DataFrame
    fit_seconds: float
    seconds: float
    latency: dict[str, float] = field(default_factory=dict)

    @property
    def holdout_proba(self) -> np.ndarray:
        return self.pipeline.predict_proba(self.holdout[list(MODEL_INPUT_COLUMNS)])[:, 1]


def family_table(results: list[Tuned]) -> pd.DataFrame:
    """One row per tuned family: CV scores at its threshold, trials run, tuning seconds."""
    rows = [
        {"family": r.family, **r.cv, "threshold": r.threshold, "trials": r.trials, "tune_s": r.seconds}
        for r in results
    ]
    return pd.DataFrame(rows).set_index("family")


def _split_off_holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shared holdout split of `df`'s labelled rows; rows without a reading id (e.g. AI4I) are
    identified by their position."""
    rows = df[df[LABEL_COLUMN].notna()] if LABEL_COLUMN in df.columns else df
    if "id" not in rows.columns:
        rows = rows.assign(id=np.arange(1, len(rows) + 1))
    split = holdout_split(rows, fraction, seed)
    return split.train, split.holdout


def train_candidate(
    df: pd.DataFrame,
    *,
    holdout: pd.DataFrame | None = None,
    family: str = "auto",
    folds: int = 5,
    trials: int = 5,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    metric: str = "pr_auc",
) -> Candidate:
    """Tune `family` (or all, for `auto`) on `df`, refit the best on `df`, and score it on `holdout`.

    `holdout` is the shared holdout (the `holdout` asset); when both frames carry reading ids, a reading in
    both raises MfdError. Without it, the shared holdout mechanism splits `holdout_fraction` of `df` off
    first (seeded with `seed`)."""
    started = time.perf_counter()
    check_family(family)
    problem = trainability_problem(df if holdout is None else pd.concat([df, holdout]), folds)
    if problem:
        raise MfdError(f"cannot train on this training set: {problem}")
    if holdout is None:
        df, holdout = _split_off_holdout(df, holdout_fraction, seed)
    elif "id" in df.columns and "id" in holdout.columns:
        assert_disjoint(df, frozenset(int(i) for i in holdout["id"]), "the training rows")
    tuning, held = labelled(df), labelled(holdout)
    results = tune_families(family, tuning, folds=folds, trials=trials, seed=seed, metric=metric)
    best = results[0]
    fit_started = time.perf_counter()
    pipeline = fit_pipeline(
        best.family, best.params, tuning[list(MODEL_INPUT_COLUMNS)], tuning[LABEL_COLUMN].to_numpy(), seed
    )
    fit_seconds = time.perf_counter() - fit_started
    proba = pipeline.predict_proba(held[list(MODEL_INPUT_COLUMNS)])[:, 1]
    return Candidate(
        family=best.family,
        params=best.params,
        threshold=best.threshold,
        pipeline=pipeline,
        cv=best.cv,
        holdout_scores=scores(held[LABEL_COLUMN].to_numpy(), proba, best.threshold),
        holdout=held,
        families=family_table(results),
        fit_seconds=fit_seconds,
        seconds=time.perf_counter() - started,
        latency=latency(pipeline, pd.concat([tuning, held], ignore_index=True)),
    )
