"""SHAP explanations of failure predictions, computed for events only (never for every scored reading).

Tree families (HistGradientBoosting, random forest, decision trees) get `shap.TreeExplainer` on the fitted
estimator, exact, in the estimator's own output (log-odds for gradient boosting, probability for forests);
any other family a permutation explainer over the estimator's probability with healthy AI4I readings as
background (sampled). Either way a row's values plus the base value sum to the model's output for it."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import (
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    HistGradientBoostingClassifier,
    RandomForestClassifier,
)
from sklearn.pipeline import Pipeline
from sklearn.tree import DecisionTreeClassifier

from mfd.features import FEATURE_COLUMNS, feature_array
from mfd.modeling.calibration import CalibratedModel
from mfd.profiles.physics import reference_readings
from mfd.schema import LABEL_COLUMN

TOP_FEATURES = 3
BACKGROUND_ROWS = 50
_TREES = (
    HistGradientBoostingClassifier,
    RandomForestClassifier,
    ExtraTreesClassifier,
    GradientBoostingClassifier,
    DecisionTreeClassifier,
)

# Boosted trees explain their log-odds (decision_function); forests and trees their probability.
_BOOSTED = (HistGradientBoostingClassifier, GradientBoostingClassifier)

Kind = Literal["tree", "sampled"]


def final_estimator(pipeline: Pipeline) -> BaseEstimator:
    """The fitted estimator after the feature step (a FlatTreeClassifier's inner estimator; a calibrated
    model's uncalibrated one: calibration is monotone, so it keeps which features push towards failure)."""
    model = pipeline.steps[-1][1]
    if isinstance(model, CalibratedModel):
        model = model.model
    return getattr(model, "estimator_", model)


def background(readings: pd.DataFrame) -> np.ndarray:
    """The sampled explainer's baseline: model inputs of BACKGROUND_ROWS healthy readings (seeded) of the
    plant's reference data (AI4I 2020 for `ai4i`); a plant without one uses the first readings it explains."""
    reference = reference_readings()
    if reference is None:
        return feature_array(readings.head(BACKGROUND_ROWS))
    healthy = reference[reference[LABEL_COLUMN] == 0]
    return feature_array(healthy.sample(min(BACKGROUND_ROWS, len(healthy)), random_state=0))


@dataclass(frozen=True)
class Explanation:
    """SHAP values per row and input feature, the base value, and the output space they add up in."""

    values: pd.DataFrame
    base_value: float
    kind: Kind
    output: str  # "log-odds" or "probability"


class Explainer:
    """A SHAP explainer for one fitted pipeline (readings -> probability), built on first use."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.estimator = final_estimator(pipeline)
        self.kind: Kind = "tree" if isinstance(self.estimator, _TREES) else "sampled"
        self._shap: object | None = None
        self._lock = threading.Lock()

    def _build(self, readings: pd.DataFrame) -> object:
        import shap  # noqa: PLC0415 - numba compiles on import: only where events are explained

        if self.kind == "tree":
            return shap.TreeExplainer(self.estimator)
        masker = shap.maskers.Independent(background(readings), max_samples=BACKGROUND_ROWS)
        return shap.PermutationExplainer(lambda x: self.estimator.predict_proba(x)[:, 1], masker)

    def explain(self, readings: pd.DataFrame) -> Explanation:
        """SHAP values of `readings` (MODEL_INPUT_COLUMNS) over the model's input features."""
        with self._lock:
            if self._shap is None:
                self._shap = self._build(readings)
        x = feature_array(readings)
        if self.kind == "tree":
            values = np.asarray(self._shap.shap_values(x, check_additivity=False))
            base = np.atleast_1d(self._shap.expected_value)
            if values.ndim == 3:  # one slice per class: the failure class
                values, base = values[..., -1], base[-1:]
            output = "log-odds" if isinstance(self.estimator, _BOOSTED) else "probability"
            base_value = float(base[-1])
        else:
            result = self._shap(x, max_evals=10 * len(FEATURE_COLUMNS) + 1, silent=True)
            values, base_value, output = (
                np.asarray(result.values),
                float(np.ravel(result.base_values)[0]),
                "probability",
            )
        return Explanation(
            pd.DataFrame(values, index=readings.index, columns=list(FEATURE_COLUMNS)),
            base_value,
            self.kind,
            output,
        )

    def model_output(self, readings: pd.DataFrame) -> np.ndarray:
        """The output the SHAP values add up to: the estimator's log-odds or its probability."""
        x = feature_array(readings)
        if isinstance(self.estimator, _BOOSTED):
            return np.ravel(self.estimator.decision_function(x))
        return self.estimator.predict_proba(x)[:, 1]


def top_features(readings: pd.DataFrame, explanation: Explanation, k: int = TOP_FEATURES) -> list[str]:
    """JSON per row: the `k` features pushing hardest towards failure (largest positive SHAP value first),
    with their values: `[{"feature", "value", "attribution"}]`."""
    inputs = pd.DataFrame(feature_array(readings), index=readings.index, columns=list(FEATURE_COLUMNS))
    values, attr = inputs.to_numpy(), explanation.values.to_numpy()
    order = np.argsort(-attr, axis=1)[:, :k]
    return [
        json.dumps(
            [
                {
                    "feature": FEATURE_COLUMNS[j],
                    "value": round(float(values[i, j]), 4),
                    "attribution": round(float(attr[i, j]), 4),
                }
                for j in order[i]
                if round(float(attr[i, j]), 4) > 0
            ]
        )
        for i in range(len(readings))
    ]


_explainers: dict[tuple[str, str], Explainer] = {}
_explainers_lock = threading.Lock()


def explainer_for(name: str, version: str, pipeline: Pipeline) -> Explainer:
    """The explainer of model `name` version `version`, built once per process (the last four kept)."""
    key = (name, version)
    with _explainers_lock:
        if key not in _explainers:
            while len(_explainers) >= 4:
                _explainers.pop(next(iter(_explainers)))
            _explainers[key] = Explainer(pipeline)
        return _explainers[key]
