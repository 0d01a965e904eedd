"""The `blend` family: a soft average of a model fit on the rows as they are and a regularized one fit on
them plus noise-jittered copies. The first keeps the sharp AI4I cut-offs, the second the plant's blurred
ones; the weight between them is tuned (on the robust objective by default).

It works on the feature array (`mfd.features.feature_array`): the jittered copies are rebuilt from the
sensor columns and the one-hot machine type, noised (`mfd.modeling.shifts.NoiseLevels`) and featurized
again, so the physics features follow the noisy sensors as they would on a plant.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.features import FEATURE_COLUMNS, WINDOW_COLUMNS, feature_array
from mfd.modeling.budget import NO_DEADLINE, Deadline
from mfd.modeling.shifts import NoiseLevels
from mfd.modeling.tree_predictor import FlatTreeClassifier
from mfd.schema import MACHINE_TYPES, SENSOR_COLUMNS

_TYPE_AT = [FEATURE_COLUMNS.index(f"type_{t}") for t in MACHINE_TYPES]


def readings_of(x: np.ndarray) -> pd.DataFrame:
    """The sensor readings and machine type a feature array was made from."""
    frame = pd.DataFrame(x[:, : len(SENSOR_COLUMNS)], columns=list(SENSOR_COLUMNS))
    types = np.array(MACHINE_TYPES, dtype=object)[np.argmax(x[:, _TYPE_AT], axis=1)]
    frame["machine_type"] = np.where(np.isnan(x[:, _TYPE_AT]).any(axis=1), None, types)
    if WINDOW_COLUMNS:  # the machine-window features ride along unchanged (the noise is on the sensors)
        windows = pd.DataFrame(x[:, x.shape[1] - len(WINDOW_COLUMNS) :], columns=list(WINDOW_COLUMNS))
        frame = pd.concat([frame, windows], axis=1)
    return frame


class JitterBlend(ClassifierMixin, BaseEstimator):
    """`weight` x a HistGradientBoosting fit on the rows + (1 - `weight`) x a regularized one (`leaf`,
    `l2`) fit on the rows and `copies` noisy copies of them (levels x `scale`)."""

    def __init__(
        self,
        weight: float = 0.5,
        copies: int = 2,
        scale: float = 1.0,
        learning_rate: float = 0.05,
        max_iter: int = 300,
        max_leaf_nodes: int = 15,
        leaf: int = 40,
        l2: float = 3.0,
        random_state: int = 0,
    ) -> None:
        self.weight = weight
        self.copies = copies
        self.scale = scale
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.leaf = leaf
        self.l2 = l2
        self.random_state = random_state

    def fit(self, X: np.ndarray, y: np.ndarray) -> JitterBlend:  # noqa: N803 - sklearn API
        return self.fit_within(X, y, NO_DEADLINE)

    def fit_within(self, X: np.ndarray, y: np.ndarray, deadline: Deadline) -> JitterBlend:  # noqa: N803
        """`fit`, raising OutOfTime when `deadline` passes between the sharp and the robust half."""
        x, y = np.asarray(X, dtype="float64"), np.asarray(y)
        self.sharp_ = FlatTreeClassifier(
            HistGradientBoostingClassifier(early_stopping=False, random_state=self.random_state)
        ).fit(x, y)
        deadline.check()
        rows, noise = readings_of(x), NoiseLevels(seed=self.random_state)
        noisy = [
            feature_array(noise.apply(rows, seed=noise.seed + 31 * k, scale=self.scale))
            for k in range(self.copies)
        ]
        self.robust_ = FlatTreeClassifier(
            HistGradientBoostingClassifier(
                learning_rate=self.learning_rate,
                max_iter=self.max_iter,
                max_leaf_nodes=self.max_leaf_nodes,
                min_samples_leaf=self.leaf,
                l2_regularization=self.l2,
                early_stopping=False,
                random_state=self.random_state,
            )
        ).fit(np.vstack([x, *noisy]), np.concatenate([y] * (self.copies + 1)))
        self.classes_ = self.sharp_.classes_
        self.n_features_in_ = x.shape[1]
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - sklearn API
        return self.weight * self.sharp_.predict_proba(X) + (1 - self.weight) * self.robust_.predict_proba(X)

    def predict(self, X: np.ndarray) -> np.ndarray:  # noqa: N803 - sklearn API
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]
