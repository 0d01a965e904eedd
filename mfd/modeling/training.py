"""Training a failure classifier: model families, optuna tuning on stratified k-fold, a threshold chosen on
validation folds, and an honest score on rows the tuning never saw (a holdout, or nested CV)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score
from sklearn.model_selection import StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from mfd.errors import MfdError
from mfd.features import feature_matrix
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.schema import LABEL_COLUMN

METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "recall", "precision")
MIN_FAILURES_PER_FOLD = 2
# `auto` tunes further only the families whose reference params score within this of the best.
SCREEN_MARGIN = 0.05


@dataclass(frozen=True)
class Family:
    """A model family: its optuna search space, a reference trial tried first, and its estimator."""

    name: str
    space: Callable[[optuna.Trial], dict[str, Any]]
    reference: dict[str, Any]
    make: Callable[[dict[str, Any], int], BaseEstimator]


def _torch_mlp(params: dict[str, Any], seed: int) -> BaseEstimator:
    """The torch MLP, imported on first use so loading the code location does not pay for torch."""
    from mfd.modeling.torch_mlp import TorchMLPClassifier

    return TorchMLPClassifier(**params, random_state=seed)


def _hgb_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "learning_rate": t.suggest_float("learning_rate", 0.02, 0.3, log=True),
        "max_iter": t.suggest_int("max_iter", 100, 300, step=50),
        "max_leaf_nodes": t.suggest_int("max_leaf_nodes", 8, 63),
        "min_samples_leaf": t.suggest_int("min_samples_leaf", 5, 60),
        "l2_regularization": t.suggest_float("l2_regularization", 1e-4, 10.0, log=True),
    }


def _rf_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": t.suggest_int("n_estimators", 100, 300, step=50),
        "max_features": t.suggest_categorical("max_features", ["sqrt", "0.5"]),
        "min_samples_leaf": t.suggest_int("min_samples_leaf", 1, 5),
        "class_weight": t.suggest_categorical("class_weight", ["none", "balanced_subsample"]),
    }


def _svm_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "C": t.suggest_float("C", 0.1, 300.0, log=True),
        "gamma": t.suggest_float("gamma", 1e-3, 1.0, log=True),
        "class_weight": t.suggest_categorical("class_weight", ["none", "balanced"]),
    }


def _logreg_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "C": t.suggest_float("C", 1e-3, 100.0, log=True),
        "class_weight": t.suggest_categorical("class_weight", ["none", "balanced"]),
    }


def _mlp_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "width": t.suggest_categorical("width", [32, 64, 128]),
        "layers": t.suggest_int("layers", 1, 3),
        "learning_rate": t.suggest_float("learning_rate", 1e-3, 1e-2, log=True),
        "weight_decay": t.suggest_float("weight_decay", 1e-6, 1e-3, log=True),
        "epochs": t.suggest_int("epochs", 20, 50, step=10),
    }


def _vote_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "n_estimators": t.suggest_int("n_estimators", 100, 300, step=50),
        "min_samples_leaf": t.suggest_int("min_samples_leaf", 1, 4),
        "learning_rate": t.suggest_float("learning_rate", 0.03, 0.2, log=True),
        "max_leaf_nodes": t.suggest_int("max_leaf_nodes", 8, 63),
        "rf_weight": t.suggest_float("rf_weight", 0.2, 0.8),
    }


def _vote(p: dict[str, Any], seed: int) -> VotingClassifier:
    return VotingClassifier(
        [
            (
                "rf",
                RandomForestClassifier(
                    n_estimators=p["n_estimators"], min_samples_leaf=p["min_samples_leaf"], random_state=seed
                ),
            ),
            (
                "hgb",
                HistGradientBoostingClassifier(
                    learning_rate=p["learning_rate"],
                    max_leaf_nodes=p["max_leaf_nodes"],
                    early_stopping=False,
                    random_state=seed,
                ),
            ),
        ],
        voting="soft",
        weights=[p["rf_weight"], 1.0 - p["rf_weight"]],
    )


def _none(value: str) -> str | None:
    return None if value == "none" else value


def _max_features(value: str) -> str | float:
    return value if value == "sqrt" else float(value)


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "hgb",
            _hgb_space,
            {
                "learning_rate": 0.1,
                "max_iter": 100,
                "max_leaf_nodes": 31,
                "min_samples_leaf": 20,
                "l2_regularization": 1e-4,
            },
            lambda p, seed: HistGradientBoostingClassifier(**p, early_stopping=False, random_state=seed),
        ),
        Family(
            "rf",
            _rf_space,
            {"n_estimators": 300, "max_features": "sqrt", "min_samples_leaf": 1, "class_weight": "none"},
            lambda p, seed: RandomForestClassifier(
                n_estimators=p["n_estimators"],
                max_features=_max_features(p["max_features"]),
                min_samples_leaf=p["min_samples_leaf"],
                class_weight=_none(p["class_weight"]),
                random_state=seed,
            ),
        ),
        Family(
            "svm",
            _svm_space,
            {"C": 1.0, "gamma": 0.1, "class_weight": "none"},
            lambda p, seed: make_pipeline(
                StandardScaler(),
                CalibratedClassifierCV(
                    SVC(C=p["C"], gamma=p["gamma"], class_weight=_none(p["class_weight"]), random_state=seed),
                    ensemble=False,
                    cv=3,
                ),
            ),
        ),
        Family(
            "logreg",
            _logreg_space,
            {"C": 1.0, "class_weight": "none"},
            lambda p, seed: make_pipeline(
                StandardScaler(),
                LogisticRegression(C=p["C"], class_weight=_none(p["class_weight"]), max_iter=2000),
            ),
        ),
        Family(
            "mlp",
            _mlp_space,
            {"width": 64, "layers": 2, "learning_rate": 3e-3, "weight_decay": 1e-5, "epochs": 40},
            lambda p, seed: _torch_mlp(p, seed),
        ),
        Family(
            "vote",
            _vote_space,
            {
                "n_estimators": 200,
                "min_samples_leaf": 1,
                "learning_rate": 0.1,
                "max_leaf_nodes": 31,
                "rf_weight": 0.6,
            },
            _vote,
        ),
    )
}
FAMILY_CHOICES: tuple[str, ...] = (*FAMILIES, "auto")


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a label, reduced to the model inputs and the label (int)."""
    missing = [c for c in (*MODEL_INPUT_COLUMNS, LABEL_COLUMN) if c not in df.columns]
    if missing:
        raise MfdError(f"training data lacks column(s) {', '.join(missing)}")
    out = df.loc[df[LABEL_COLUMN].notna(), [*MODEL_INPUT_COLUMNS, LABEL_COLUMN]].reset_index(drop=True)
    out[LABEL_COLUMN] = out[LABEL_COLUMN].astype("int64")
    return out


def data_version(df: pd.DataFrame) -> str:
    """A short content hash of the labelled rows a model trains on: the training-set version."""
    hashed = pd.util.hash_pandas_object(labelled(df), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def trainability_problem(df: pd.DataFrame, folds: int = 5) -> str | None:
    """Why `df` cannot train a classifier with `folds`-fold CV plus a holdout, or None if it can."""
    if LABEL_COLUMN not in df.columns:
        return f"no `{LABEL_COLUMN}` column"
    labels = df[LABEL_COLUMN].dropna().astype("int64")
    classes = sorted(labels.unique().tolist())
    if len(classes) < 2:
        return (
            f"one class only ({classes or 'no labelled rows'}): a classifier needs failures and non-failures"
        )
    failures = int(labels.sum())
    needed = MIN_FAILURES_PER_FOLD * (folds + 1)
    if failures < needed:
        return (
            f"{failures} failures in {len(labels)} labelled rows: {folds}-fold CV plus a holdout needs at least "
            f"{needed} ({MIN_FAILURES_PER_FOLD} per fold)"
        )
    return None


def scores(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), and F1 / recall / precision at `threshold`."""
    predicted = proba >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float((y == 1).sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "f1": f1,
        "recall": recall,
        "precision": precision,
    }


def best_threshold(y: np.ndarray, proba: np.ndarray) -> float:
    """The probability threshold that maximizes F1 on (out-of-fold) validation predictions."""
    precision, recall, thresholds = precision_recall_curve(y, proba)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def confusion(y: np.ndarray, proba: np.ndarray, threshold: float) -> np.ndarray:
    """2x2 confusion matrix (rows: true 0/1, columns: predicted 0/1)."""
    return confusion_matrix(y, (proba >= threshold).astype("int64"), labels=[0, 1])


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


def _fit_pipeline(family: str, params: dict[str, Any], x: pd.DataFrame, y: np.ndarray, seed: int) -> Pipeline:
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
    if family not in FAMILIES:
        raise MfdError(f"unknown model family {family!r}; choose one of {', '.join(FAMILY_CHOICES)}")
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


def _median_ms(pipeline: Pipeline, rows: pd.DataFrame, repeats: int) -> float:
    pipeline.predict_proba(rows)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline.predict_proba(rows)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def latency(pipeline: Pipeline, readings: pd.DataFrame, repeats: int = 50) -> dict[str, float]:
    """In-process predict_proba latency, median ms: a batch of one row (`repeats` calls) and 10,000 rows
    (5 calls)."""
    rows = readings[list(MODEL_INPUT_COLUMNS)].reset_index(drop=True)
    batch = rows.sample(10_000, replace=len(rows) < 10_000, random_state=0)
    return {
        "latency_row_ms": _median_ms(pipeline, rows.head(1), repeats),
        "latency_10k_ms": _median_ms(pipeline, batch, 5),
    }


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


def train_candidate(
    df: pd.DataFrame,
    *,
    family: str = "auto",
    folds: int = 5,
    trials: int = 5,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    metric: str = "pr_auc",
) -> Candidate:
    """Split off a stratified holdout, tune `family` (or all, for `auto`) on the rest, refit the best on the
    rest, and score it on the holdout."""
    started = time.perf_counter()
    if family not in FAMILY_CHOICES:
        raise MfdError(f"unknown model family {family!r}; choose one of {', '.join(FAMILY_CHOICES)}")
    data = labelled(df)
    problem = trainability_problem(data, folds)
    if problem:
        raise MfdError(f"cannot train on this training set: {problem}")
    tuning, holdout = train_test_split(
        data, test_size=holdout_fraction, stratify=data[LABEL_COLUMN], random_state=seed
    )
    results = tune_families(family, tuning, folds=folds, trials=trials, seed=seed, metric=metric)
    best = results[0]
    fit_started = time.perf_counter()
    pipeline = _fit_pipeline(
        best.family, best.params, tuning[list(MODEL_INPUT_COLUMNS)], tuning[LABEL_COLUMN].to_numpy(), seed
    )
    fit_seconds = time.perf_counter() - fit_started
    holdout = holdout.reset_index(drop=True)
    proba = pipeline.predict_proba(holdout[list(MODEL_INPUT_COLUMNS)])[:, 1]
    return Candidate(
        family=best.family,
        params=best.params,
        threshold=best.threshold,
        pipeline=pipeline,
        cv=best.cv,
        holdout_scores=scores(holdout[LABEL_COLUMN].to_numpy(), proba, best.threshold),
        holdout=holdout,
        families=family_table(results),
        fit_seconds=fit_seconds,
        seconds=time.perf_counter() - started,
        latency=latency(pipeline, data),
    )


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
        pipeline = _fit_pipeline(best.family, best.params, x.iloc[train], y[train], seed)
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
