"""Optuna tuning of the model families on stratified k-fold CV (a threshold chosen on the out-of-fold
predictions), the `auto` screen across families, and nested CV for honest scores of the whole procedure."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mfd.features import feature_matrix
from mfd.modeling.families import FAMILIES, check_family
from mfd.modeling.metrics import best_threshold, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.modeling.training_data import labelled
from mfd.schema import LABEL_COLUMN

# `auto` tunes further only the families whose reference params score within this of the best.
SCREEN_MARGIN = 0.05


@dataclass(frozen=True)
class Tuned:
    """The best trial of one family: its params, its CV scores and its out-of-fold probabilities."""

    family: str
    params: dict[str, Any]
    cv: dict[str, float]
    threshold: float
    oof: np.ndarray
    trials: int
    seconds: float


def fit_pipeline(family: str, params: dict[str, Any], x: pd.DataFrame, y: np.ndarray, seed: int) -> Pipeline:
    with threadpool_limits(1):
        return build_pipeline(FAMILIES[family].make(params, seed)).fit(x, y)


def tune(
    family: str,
    df: pd.DataFrame,
    *,
    folds: int = 5,
    trials: int = 5,
    seed: int = 0,
    metric: str = "pr_auc",
    reference: bool = True,
) -> Tuned:
    """`trials` optuna trials (TPE, seeded; the family's reference params first if `reference`; median
    pruning after each fold) scored by stratified `folds`-fold CV on `df` (labelled readings)."""
    check_family(family, tuple(FAMILIES))
    started = time.perf_counter()
    data = labelled(df)
    x, y = feature_matrix(data), data[LABEL_COLUMN].to_numpy()
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    spec = FAMILIES[family]
    oof_by_trial: dict[int, np.ndarray] = {}

    def objective(trial: optuna.Trial) -> float:
        params = spec.space(trial)
        oof = np.zeros(len(y))
        fold_scores = []
        for step, (train, valid) in enumerate(splits):
            model = clone(spec.make(params, seed)).fit(x.iloc[train], y[train])
            oof[valid] = model.predict_proba(x.iloc[valid])[:, 1]
            fold_scores.append(scores(y[valid], oof[valid], 0.5)[metric])
            trial.report(float(np.mean(fold_scores)), step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        oof_by_trial[trial.number] = oof
        return float(np.mean(fold_scores))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    if reference:
        study.enqueue_trial(spec.reference)
    # One thread per fit: on a small, busy machine OpenMP/BLAS threads mostly spin against each other.
    with threadpool_limits(1):
        study.optimize(objective, n_trials=trials)
    best = study.best_trial
    oof = oof_by_trial[best.number]
    threshold = best_threshold(y, oof)
    return Tuned(
        family=family,
        params=dict(best.params),
        cv=scores(y, oof, threshold),
        threshold=threshold,
        oof=oof,
        trials=len(study.trials),
        seconds=time.perf_counter() - started,
    )


def _tune_all(names: list[str], df: pd.DataFrame, **kwargs: Any) -> list[Tuned]:
    # Two families at a time, in threads: the fits release the GIL.
    return Parallel(n_jobs=min(len(names), 2), prefer="threads")(
        delayed(tune)(n, df, **kwargs) for n in names
    )


def tune_families(
    family: str, df: pd.DataFrame, *, folds: int, trials: int, seed: int, metric: str = "pr_auc"
) -> list[Tuned]:
    """Tuning results, best first by CV `metric`. For `auto`: every family's reference params first, then
    the remaining `trials - 1` trials only for the families within SCREEN_MARGIN of the best."""
    common = {"folds": folds, "seed": seed, "metric": metric}
    if family != "auto":
        return [tune(family, df, trials=trials, **common)]
    screened = _tune_all(list(FAMILIES), df, trials=1, **common)
    best = max(r.cv[metric] for r in screened)
    contenders = [r.family for r in screened if r.cv[metric] >= best - SCREEN_MARGIN]
    tuned = (
        {r.family: r for r in _tune_all(contenders, df, trials=trials - 1, reference=False, **common)}
        if trials > 1
        else {}
    )
    results = []
    for first in screened:
        more = tuned.get(first.family)
        if more is None:
            results.append(first)
            continue
        better = more if more.cv[metric] > first.cv[metric] else first
        results.append(
            replace(better, trials=first.trials + more.trials, seconds=first.seconds + more.seconds)
        )
    return sorted(results, key=lambda r: r.cv[metric], reverse=True)


def nested_cv(
    df: pd.DataFrame,
    *,
    family: str = "auto",
    outer_folds: int = 5,
    inner_folds: int = 3,
    trials: int = 5,
    seed: int = 0,
    metric: str = "pr_auc",
) -> pd.DataFrame:
    """Honest scores: per outer stratified fold, tune (and, for `auto`, pick the family) on the outer-train
    rows only, refit, and score the outer-test rows at the threshold chosen on inner validation folds."""
    data = labelled(df)
    x, y = data[list(MODEL_INPUT_COLUMNS)], data[LABEL_COLUMN].to_numpy()
    rows = []
    outer = StratifiedKFold(outer_folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(outer.split(x, y)):
        best = tune_families(
            family, data.iloc[train], folds=inner_folds, trials=trials, seed=seed, metric=metric
        )[0]
        started = time.perf_counter()
        pipeline = fit_pipeline(best.family, best.params, x.iloc[train], y[train], seed)
        fit_s = time.perf_counter() - started
        proba = pipeline.predict_proba(x.iloc[test])[:, 1]
        rows.append(
            {
                "fold": fold,
                "family": best.family,
                **scores(y[test], proba, best.threshold),
                "threshold": best.threshold,
                "fit_s": fit_s,
                "tune_s": best.seconds,
            }
        )
    return pd.DataFrame(rows).set_index("fold")
