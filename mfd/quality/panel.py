"""The classifier quality panel: eight grid-searched classifiers on each training set, one shared holdout.

Every training set (raw, cleaned, each augmented set) is scored on the same untouched holdout of real rows
(`mfd.modeling.holdout`), and on its shifted copies when given (`noisy_pr_auc`, ...). Grid search uses
stratified K-fold CV scored by PR AUC (average precision), the metric that matters for a 3 % failure rate;
the refitted best model is then scored on the holdouts. The time budget is shared out between the training
sets: each set's grid searches run only while its share (and what earlier sets left) lasts, and a search
that would not end within it is not started.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import parallel_config
from matplotlib.figure import Figure
from sklearn.base import ClassifierMixin
from sklearn.discriminant_analysis import QuadraticDiscriminantAnalysis
from sklearn.ensemble import AdaBoostClassifier, RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from sklearn.tree import DecisionTreeClassifier

from mfd.errors import MfdError
from mfd.features import feature_matrix
from mfd.plots import plt
from mfd.schema import LABEL_COLUMN

# Each factory takes the seed; every model sits behind a StandardScaler (a no-op for the trees).
CLASSIFIERS: dict[str, Callable[[int], ClassifierMixin]] = {
    "KNN": lambda seed: KNeighborsClassifier(),
    "SVC": lambda seed: SVC(kernel="rbf", random_state=seed),
    "DecisionTree": lambda seed: DecisionTreeClassifier(random_state=seed),
    "RandomForest": lambda seed: RandomForestClassifier(n_estimators=50, n_jobs=1, random_state=seed),
    # max_iter is a budget: 100 epochs on 4,000 rows (ConvergenceWarning silenced on purpose).
    "MLP": lambda seed: MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=100, random_state=seed),
    "AdaBoost": lambda seed: AdaBoostClassifier(random_state=seed),
    "GaussianNB": lambda seed: GaussianNB(),
    "QDA": lambda seed: QuadraticDiscriminantAnalysis(solver="eigen"),
}

# Small on purpose: the panel (8 classifiers x 6 training sets of ~16,000 rows) is sized for 30 s on 2 cores.
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "KNN": {"n_neighbors": [5, 15, 31], "weights": ["uniform", "distance"]},
    "SVC": {"C": [1.0, 10.0], "gamma": ["scale"]},
    "DecisionTree": {"max_depth": [4, 8, None], "min_samples_leaf": [1, 5]},
    "RandomForest": {"max_depth": [None, 12]},
    "MLP": {"alpha": [1e-4, 1e-2]},
    "AdaBoost": {"n_estimators": [50], "learning_rate": [0.5, 1.0]},
    "GaussianNB": {"var_smoothing": [1e-9, 1e-6]},
    "QDA": {"shrinkage": ["auto", 0.1, 0.5]},
}

# The slow learners train on a stratified subsample of at most this many rows (stated in each row's note).
DEFAULT_MAX_TRAIN_ROWS: dict[str, int] = {
    "SVC": 3000,
    "KNN": 4000,
    "MLP": 3000,
    "RandomForest": 8000,
    "AdaBoost": 8000,
}

TABLE_COLUMNS: tuple[str, ...] = (
    "dataset",
    "classifier",
    "train_rows",
    "synthetic_rows",
    "roc_auc",
    "pr_auc",
    "f1",
    "cv_pr_auc",
    "search_s",
    "fit_s",
    "predict_s",
    "best_params",
    "note",
)


@dataclass(frozen=True)
class PanelConfig:
    """What the panel runs: classifiers, their grids, CV folds, a wall-time budget, parallelism, seed."""

    classifiers: tuple[str, ...] = tuple(CLASSIFIERS)
    grids: Mapping[str, Mapping[str, list[Any]]] = field(default_factory=lambda: DEFAULT_GRIDS)
    folds: int = 3
    time_budget_s: float = 30.0
    n_jobs: int = 2
    seed: int = 0
    max_train_rows: Mapping[str, int] = field(default_factory=lambda: DEFAULT_MAX_TRAIN_ROWS)

    def __post_init__(self) -> None:
        unknown = [c for c in self.classifiers if c not in CLASSIFIERS]
        if unknown:
            raise MfdError(f"unknown classifier(s) {unknown}; choose from {list(CLASSIFIERS)}")
        if not self.classifiers:
            raise MfdError("the panel needs at least one classifier")
        if self.folds < 2:
            raise MfdError(f"CV folds must be at least 2, got {self.folds}")
        for name in self.classifiers:
            grid = self.grids.get(name)
            if not grid or any(not isinstance(v, list) or not v for v in grid.values()):
                raise MfdError(f"the grid for {name} must map each parameter to a non-empty list of values")


def pipeline(name: str, seed: int) -> Pipeline:
    """The named classifier behind a StandardScaler; grid keys are the classifier's own parameter names."""
    return Pipeline([("scale", StandardScaler()), ("model", CLASSIFIERS[name](seed))])


def xy(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Model inputs (`feature_matrix`) and the 0/1 label."""
    return feature_matrix(df).to_numpy(), df[LABEL_COLUMN].astype("int64").to_numpy()


def _subsample(df: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    if limit is None or len(df) <= limit:
        return df
    keep, _ = train_test_split(
        np.arange(len(df)), train_size=limit, random_state=seed, stratify=df[LABEL_COLUMN].astype("int64")
    )
    return df.iloc[np.sort(keep)]


def scores_of(model: Pipeline, x: np.ndarray) -> np.ndarray:
    """Continuous failure scores: probability when the model has it, otherwise the decision function."""
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)[:, 1]
    return model.decision_function(x)


def _search_one(
    name: str,
    train: pd.DataFrame,
    holdout: tuple[np.ndarray, np.ndarray],
    config: PanelConfig,
    shifted: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    limit = config.max_train_rows.get(name)
    used = _subsample(train, limit, config.seed)
    x, y = xy(used)
    if np.bincount(y, minlength=2).min() < config.folds:
        raise MfdError(
            f"{name}: {config.folds}-fold CV needs at least {config.folds} rows of each class "
            f"(got {np.bincount(y, minlength=2).tolist()}); lower folds or give more data"
        )
    search = GridSearchCV(
        pipeline(name, config.seed),
        {f"model__{k}": v for k, v in config.grids[name].items()},
        scoring="average_precision",
        cv=StratifiedKFold(config.folds, shuffle=True, random_state=config.seed),
        n_jobs=config.n_jobs,
        error_score=np.nan,
    )
    started = time.perf_counter()
    # Threads, not loky processes: no worker start-up per search and no helper process outliving the panel.
    with warnings.catch_warnings(), parallel_config(backend="threading"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(x, y)
    search_s = time.perf_counter() - started
    hx, hy = holdout
    started = time.perf_counter()
    scores = scores_of(search.best_estimator_, hx)
    predicted = search.best_estimator_.predict(hx)
    predict_s = time.perf_counter() - started
    on_shifts = {}
    for shift, (sx, sy) in (shifted or {}).items():
        shift_scores = scores_of(search.best_estimator_, sx)
        on_shifts[f"{shift}_roc_auc"] = roc_auc_score(sy, shift_scores)
        on_shifts[f"{shift}_pr_auc"] = average_precision_score(sy, shift_scores)
    synthetic = int(used["synthetic"].sum()) if "synthetic" in used.columns else 0
    note = f"subsampled {len(used)}/{len(train)} rows" if len(used) < len(train) else ""
    return {
        "train_rows": len(used),
        "synthetic_rows": synthetic,
        "roc_auc": roc_auc_score(hy, scores),
        "pr_auc": average_precision_score(hy, scores),
        "f1": f1_score(hy, predicted, zero_division=0),
        "cv_pr_auc": search.best_score_,
        "search_s": search_s,
        "fit_s": search.refit_time_,
        "predict_s": predict_s,
        "best_params": json.dumps({k.removeprefix("model__"): v for k, v in search.best_params_.items()}),
        "note": note,
        **on_shifts,
    }


def run_panel(
    train_sets: Mapping[str, pd.DataFrame],
    holdout: pd.DataFrame,
    config: PanelConfig | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    shifted: Mapping[str, pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """One row per (training set, classifier): holdout ROC AUC / PR AUC / F1, times, best params, and
    `<shift>_roc_auc` / `<shift>_pr_auc` on each `shifted` holdout (name -> rows, e.g. `noisy`).

    The k-th training set may run grid searches until k/n of `time_budget_s` is spent: a search starts only
    when it would end by then, judged by the same classifier's last search (seconds per training row); the
    rows it cannot run are listed with empty scores and a note saying so. A classifier that cannot be fitted
    on a set (e.g. QDA with fewer failures than features) gets empty scores and the error as its note.
    """
    config = config or PanelConfig()
    hx, hy = xy(holdout)
    if np.bincount(hy, minlength=2).min() < 1:
        raise MfdError("the holdout needs at least one failure and one non-failure to be scored")
    shifted_xy = {name: xy(rows) for name, rows in (shifted or {}).items()}
    started = time.perf_counter()
    per_row: dict[str, float] = {}  # classifier -> wall seconds of its last search and scoring per row
    rows = []
    for k, (dataset, train) in enumerate(train_sets.items(), start=1):
        share = config.time_budget_s * k / len(train_sets)
        for name in config.classifiers:
            used = min(len(train), config.max_train_rows.get(name, len(train)))
            expected = per_row.get(name, 0.0) * used
            row: dict[str, Any] = {"dataset": dataset, "classifier": name}
            if time.perf_counter() - started + expected > share:
                row["note"] = f"skipped: time budget of {config.time_budget_s:g} s spent"
                row["train_rows"] = len(train)
            else:
                search_started = time.perf_counter()
                try:
                    row |= _search_one(name, train, (hx, hy), config, shifted_xy)
                except (ValueError, np.linalg.LinAlgError) as exc:
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    row |= {"train_rows": len(train), "note": f"failed: {type(exc).__name__}: {reason}"}
                    log(f"{dataset} / {name}: {row['note']}")
                else:
                    log(f"{dataset} / {name}: PR AUC {row['pr_auc']:.3f} in {row['search_s']:.1f} s")
                per_row[name] = (time.perf_counter() - search_started) / max(used, 1)
            rows.append(row)
    extra = [f"{shift}_{metric}" for shift in shifted_xy for metric in ("roc_auc", "pr_auc")]
    return pd.DataFrame(rows).reindex(columns=[*TABLE_COLUMNS, *extra])


def lift_summary(table: pd.DataFrame, baseline: str = "raw") -> pd.DataFrame:
    """Per training set: mean and best holdout PR AUC / ROC AUC across classifiers, and the mean PR AUC
    lift over `baseline` on the same classifiers (negative when the set hurts), on the clean holdout
    (`pr_auc_lift`) and on each shifted one (`noisy_pr_auc_lift`, ...)."""
    summary = table.groupby("dataset", sort=False)[["pr_auc", "roc_auc", "f1"]].agg(["mean", "max"])
    summary.columns = [f"{metric}_{stat}" for metric, stat in summary.columns]
    if baseline in summary.index:
        for column in ["pr_auc", *(c for c in table.columns if c.endswith("_pr_auc") and c != "cv_pr_auc")]:
            base = table[table["dataset"] == baseline].set_index("classifier")[column]
            summary[f"{column}_lift"] = [
                (table[table["dataset"] == d].set_index("classifier")[column] - base).mean()
                for d in summary.index
            ]
    return summary


def bar_chart(table: pd.DataFrame, metric: str = "pr_auc") -> Figure:
    """Grouped bars: holdout `metric` per classifier, one bar per training set."""
    pivot = table.pivot(index="classifier", columns="dataset", values=metric)
    pivot = pivot.reindex(index=table["classifier"].unique(), columns=table["dataset"].unique())
    fig, ax = plt.subplots(figsize=(8, 4))
    pivot.plot.bar(ax=ax, width=0.8, rot=30)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")  # long names never overlap
    ax.set_ylabel(f"holdout {metric.replace('_', ' ').upper()}")
    ax.set_ylim(0, 1)
    ax.set_title(f"Holdout {metric.replace('_', ' ').upper()} by classifier and training set")
    # Beside the axes, never over the tallest bars.
    ax.legend(title="training set", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    return fig
