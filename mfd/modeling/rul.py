"""The remaining-useful-life head: a regression on the failure model's own inputs, trained where the profile
has machines run to failure, saved inside the failure model (an attribute of the pickled model, RUL_ATTR).

Target: the time from a reading to its machine's next failure, in the profile's time unit (hours), capped
at the profile's `rul_cap` (a machine far from failure reads as healthy; the usual piecewise-linear target
of C-MAPSS). Readings with no failure after them (censored) are not targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from mfd.modeling.lead_time import failures_from_labels, hours_to_failure
from mfd.schema import LABEL_COLUMN, PROFILE

RUL_ATTR = "mfd_rul_head"
HOUR = pd.Timedelta(hours=1)


@dataclass
class RulHead:
    """A fitted regressor from the failure model's inputs (readings with their window columns) to hours to
    failure, clipped to [0, cap_hours]."""

    pipeline: Pipeline
    cap_hours: float

    def predict(self, readings: pd.DataFrame) -> np.ndarray:
        if not len(readings):
            return np.empty(0)
        return np.clip(np.asarray(self.pipeline.predict(readings), dtype="float64"), 0.0, self.cap_hours)


def capped_target(hours_to_failure: pd.Series | np.ndarray, cap: pd.Timedelta) -> np.ndarray:
    """Hours to failure capped at `cap` (NaN stays NaN: censored)."""
    return np.minimum(np.asarray(hours_to_failure, dtype="float64"), cap / HOUR)


def rul_errors(frame: pd.DataFrame, estimate: np.ndarray) -> dict[str, float]:
    """RMSE and MAE in hours of `estimate` (per reading of `frame`: machine_id, timestamp, label) against the
    hours to each reading's next failure (read off the labels) capped at the profile's `rul_cap`, over the
    readings a failure follows; empty when none does."""
    hours = hours_to_failure(frame, failures_from_labels(frame, LABEL_COLUMN, PROFILE.horizon))
    known = np.isfinite(hours)
    if not known.any():
        return {}
    cap = PROFILE.rul_cap / HOUR if PROFILE.rul_cap is not None else np.inf
    error = np.asarray(estimate, dtype="float64")[known] - np.minimum(hours[known], cap)
    return {
        "rul_rmse_hours": float(np.sqrt(np.mean(error**2))),
        "rul_mae_hours": float(np.mean(np.abs(error))),
        "rul_rows": float(known.sum()),
    }


class SeedAveraged(RegressorMixin, BaseEstimator):
    """The mean of HistGradientBoosting regressors (default settings) fit with each of `seeds`: what
    bench/early_warning.py measures on C-MAPSS FD001 (RMSE and PHM08 beside published figures)."""

    def __init__(self, seeds: tuple[int, ...] = (0, 1, 2)) -> None:
        self.seeds = seeds

    def fit(self, X: np.ndarray, y: np.ndarray) -> SeedAveraged:  # noqa: N803 - sklearn API
        self.models_ = [HistGradientBoostingRegressor(random_state=s).fit(X, y) for s in self.seeds]
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - sklearn API
        return np.mean([m.predict(X) for m in self.models_], axis=0)


def default_regressor(seed: int = 0) -> BaseEstimator:
    """Three seeds from `seed` on (`SeedAveraged`)."""
    return SeedAveraged(tuple(range(seed, seed + 3)))


def fit_rul_head(
    features: BaseEstimator,
    readings: pd.DataFrame,
    hours_to_failure: pd.Series | np.ndarray,
    cap: pd.Timedelta,
    *,
    regressor: RegressorMixin | None = None,
    seed: int = 0,
) -> RulHead | None:
    """A RulHead on `readings` (the failure model's inputs; `features` its unfitted feature step) with
    `hours_to_failure` per reading (NaN: censored, left out); None when no reading has a target."""
    target = capped_target(hours_to_failure, cap)
    known = np.isfinite(target)
    if known.sum() < 2:
        return None
    model = regressor if regressor is not None else default_regressor(seed)
    pipeline = Pipeline([("features", features), ("model", model)])
    pipeline.fit(readings.loc[known], target[known])
    return RulHead(pipeline, cap / HOUR)


def attach(model: Any, head: RulHead | None) -> Any:
    """`model` carrying `head` (saved with it); no head: the model unchanged (and any old head removed)."""
    if head is None:
        if hasattr(model, RUL_ATTR):
            delattr(model, RUL_ATTR)
        return model
    setattr(model, RUL_ATTR, head)
    return model


def attached(model: Any) -> RulHead | None:
    """The RulHead saved with `model`; None for a model without one (any model registered before heads)."""
    head = getattr(model, RUL_ATTR, None)
    return head if isinstance(head, RulHead) else None
