"""The deployable model: a scikit-learn Pipeline from raw readings (schema columns) to failure probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from mfd.features import WINDOW_COLUMNS, feature_array
from mfd.modeling.tree_predictor import FlatTreeClassifier, flattenable
from mfd.schema import SEGMENT_COLUMN, SENSOR_COLUMNS

# What a caller must send to score a reading: its segment and sensors, and the machine-window features where
# the profile declares windows (computed before the model from the machine's history: mfd.features).
MODEL_INPUT_COLUMNS: tuple[str, ...] = (SEGMENT_COLUMN, *SENSOR_COLUMNS, *WINDOW_COLUMNS)


class ReadingFeatures(TransformerMixin, BaseEstimator):
    """Readings -> model inputs (sensors, physics features, one-hot type) as a float64 array; stateless."""

    def fit(self, X: pd.DataFrame, y: object = None) -> ReadingFeatures:  # noqa: N803 - sklearn API
        return self

    def transform(self, X: pd.DataFrame) -> np.ndarray:  # noqa: N803 - sklearn API
        return feature_array(X)


def build_pipeline(estimator: BaseEstimator) -> Pipeline:
    """A pipeline that takes readings (MODEL_INPUT_COLUMNS) and ends in `estimator`; a tree ensemble is
    wrapped in FlatTreeClassifier (same probabilities, small batches scored in microseconds)."""
    model = FlatTreeClassifier(estimator) if flattenable(estimator) else estimator
    return Pipeline([("features", ReadingFeatures()), ("model", model)])


def failure_probability(predictions: object) -> np.ndarray:
    """The failure-class column of a predict_proba result (ndarray or DataFrame from pyfunc)."""
    arr = np.asarray(predictions, dtype="float64")
    return arr[:, -1] if arr.ndim == 2 else arr
