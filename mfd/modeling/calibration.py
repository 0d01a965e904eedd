"""Calibrated failure probabilities: a calibrator (isotonic or sigmoid) fit on out-of-fold validation
predictions, wrapped around the fitted model so the deployed pipeline returns calibrated probabilities;
the Brier score and the reliability diagram that show what it changed."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss

from mfd.errors import MfdError
from mfd.plots import plt

CALIBRATIONS: tuple[str, ...] = ("sigmoid", "isotonic", "none")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype="float64"), _EPS, 1 - _EPS)
    return np.log(p / (1 - p)).reshape(-1, 1)


class Calibrator(BaseEstimator):
    """Maps raw failure probabilities to calibrated ones: `sigmoid` (Platt scaling on the logit, keeps the
    ranking) or `isotonic` (monotone steps)."""

    def __init__(self, method: str = "sigmoid") -> None:
        self.method = method

    def fit(self, proba: np.ndarray, y: np.ndarray) -> Calibrator:
        if self.method not in CALIBRATIONS[:2]:
            raise MfdError(f"unknown calibration {self.method!r}; choose one of {', '.join(CALIBRATIONS)}")
        if self.method == "isotonic":
            self.map_ = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(proba, y)
        else:
            self.map_ = LogisticRegression(C=1e6).fit(_logit(proba), y)
        return self

    def transform(self, proba: np.ndarray) -> np.ndarray:
        if self.method == "isotonic":
            return self.map_.predict(np.asarray(proba, dtype="float64"))
        return self.map_.predict_proba(_logit(proba))[:, 1]


class CalibratedModel(ClassifierMixin, BaseEstimator):
    """A fitted classifier whose failure probability goes through a fitted Calibrator."""

    def __init__(self, model: BaseEstimator, calibrator: Calibrator) -> None:
        self.model = model
        self.calibrator = calibrator

    @property
    def classes_(self) -> np.ndarray:
        return self.model.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: np.ndarray, y: np.ndarray) -> CalibratedModel:  # noqa: N803 - sklearn API
        raise MfdError("CalibratedModel wraps an already fitted model: fit the model, then calibrate it")

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - sklearn API
        p = self.calibrator.transform(self.model.predict_proba(X)[:, 1])
        return np.column_stack([1 - p, p])

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - sklearn API
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")


def brier(y: np.ndarray, proba: np.ndarray) -> float:
    """Brier score (mean squared error of the probability; lower is better)."""
    return float(brier_score_loss(y, proba))


def reliability_figure(y: np.ndarray, curves: dict[str, np.ndarray], bins: int = 10) -> Figure:
    """Reliability diagram: observed failure rate against mean predicted probability per quantile bin,
    one line per named probability vector, with its Brier score."""
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="perfectly calibrated")
    for name, proba in curves.items():
        observed, predicted = calibration_curve(y, proba, n_bins=bins, strategy="quantile")
        ax.plot(predicted, observed, marker="o", ms=3, label=f"{name} (Brier {brier(y, proba):.4f})")
    ax.set(xlabel="mean predicted probability", ylabel="observed failure rate", title="Reliability (holdout)")
    ax.legend(loc="upper left", fontsize="small")
    return fig
