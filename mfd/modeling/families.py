"""Model families of the candidate classifier: each one's optuna search space, the reference params tried
first, a regularized configuration (larger leaves, l2, shallower trees) tried next, and how its estimator
is made."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, VotingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from mfd.errors import MfdError


@dataclass(frozen=True)
class Family:
    """A model family: its optuna search space, a reference trial tried first, a regularized one tried when
    the family gets more trials, and its estimator."""

    name: str
    space: Callable[[optuna.Trial], dict[str, Any]]
    reference: dict[str, Any]
    make: Callable[[dict[str, Any], int], BaseEstimator]
    regularized: dict[str, Any] | None = None


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


def _blend_space(t: optuna.Trial) -> dict[str, Any]:
    return {
        "weight": t.suggest_float("weight", 0.2, 0.8),
        "copies": t.suggest_int("copies", 1, 3),
        "scale": t.suggest_float("scale", 0.5, 1.5),
        "learning_rate": t.suggest_float("learning_rate", 0.03, 0.1, log=True),
        "max_iter": t.suggest_int("max_iter", 200, 400, step=100),
        "max_leaf_nodes": t.suggest_int("max_leaf_nodes", 8, 31),
        "leaf": t.suggest_int("leaf", 20, 80),
        "l2": t.suggest_float("l2", 0.1, 10.0, log=True),
    }


def _blend(p: dict[str, Any], seed: int) -> BaseEstimator:
    from mfd.modeling.blend import JitterBlend

    return JitterBlend(**p, random_state=seed)


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
            {
                "learning_rate": 0.05,
                "max_iter": 300,
                "max_leaf_nodes": 15,
                "min_samples_leaf": 40,
                "l2_regularization": 3.0,
            },
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
            {"n_estimators": 300, "max_features": "0.5", "min_samples_leaf": 3, "class_weight": "none"},
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
            {"C": 1.0, "gamma": 0.03, "class_weight": "none"},
        ),
        Family(
            "logreg",
            _logreg_space,
            {"C": 1.0, "class_weight": "none"},
            lambda p, seed: make_pipeline(
                StandardScaler(),
                LogisticRegression(C=p["C"], class_weight=_none(p["class_weight"]), max_iter=2000),
            ),
            {"C": 0.1, "class_weight": "none"},
        ),
        Family(
            "mlp",
            _mlp_space,
            {"width": 64, "layers": 2, "learning_rate": 3e-3, "weight_decay": 1e-5, "epochs": 40},
            lambda p, seed: _torch_mlp(p, seed),
            {"width": 64, "layers": 2, "learning_rate": 3e-3, "weight_decay": 1e-3, "epochs": 30},
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
            {
                "n_estimators": 200,
                "min_samples_leaf": 3,
                "learning_rate": 0.05,
                "max_leaf_nodes": 15,
                "rf_weight": 0.5,
            },
        ),
        Family(
            "blend",
            _blend_space,
            {
                "weight": 0.5,
                "copies": 2,
                "scale": 1.0,
                "learning_rate": 0.05,
                "max_iter": 300,
                "max_leaf_nodes": 15,
                "leaf": 40,
                "l2": 3.0,
            },
            _blend,
            {
                "weight": 0.35,
                "copies": 2,
                "scale": 1.0,
                "learning_rate": 0.05,
                "max_iter": 300,
                "max_leaf_nodes": 12,
                "leaf": 60,
                "l2": 5.0,
            },
        ),
    )
}
FAMILY_CHOICES: tuple[str, ...] = (*FAMILIES, "auto")


def check_family(family: str, choices: tuple[str, ...] = FAMILY_CHOICES) -> None:
    """Raise MfdError unless `family` is one of `choices`."""
    if family not in choices:
        raise MfdError(f"unknown model family {family!r}; choose one of {', '.join(choices)}")
