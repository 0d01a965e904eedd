"""The deployable model: a scikit-learn Pipeline from raw readings (schema columns) to failure probability."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline

from mfd.features import feature_matrix
from mfd.schema import SENSOR_COLUMNS

# What a caller must send to score a reading: machine type plus the five sensors.
MODEL_INPUT_COLUMNS: tuple[str, ...] = ("machine_type", *SENSOR_COLUMNS)


class ReadingFeatures(TransformerMixin, BaseEstimator):
    """Readings -> model inputs (sensors, physics features, one-hot type); stateless."""

    def fit(self, X: pd.DataFrame, y: object = None) -> ReadingFeatures:  # noqa: N803 - sklearn API
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:  # noqa: N803 - sklearn API
        return feature_matrix(X)


def build_pipeline(estimator: BaseEstimator) -> Pipeline:
    """A pipeline that takes readings (MODEL_INPUT_COLUMNS) and ends in `estimator`."""
    return Pipeline([("features", ReadingFeatures()), ("model", estimator)])


def failure_probability(predictions: object) -> np.ndarray:
    """The failure-class column of a predict_proba result (ndarray or DataFrame from pyfunc)."""
    arr = np.asarray(predictions, dtype="float64")
    return arr[:, -1] if arr.ndim == 2 else arr
