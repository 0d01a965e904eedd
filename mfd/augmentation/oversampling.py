"""SMOTE oversampling of the failures (imbalanced-learn's SMOTENC: machine type stays a real category)."""

from __future__ import annotations

import pandas as pd
from imblearn.over_sampling import SMOTENC

from mfd.augmentation.frames import combine, require_inputs, rows_to_add
from mfd.errors import MfdError
from mfd.schema import LABEL_COLUMN, SENSOR_COLUMNS


def smote_augment(
    train: pd.DataFrame, target_ratio: float = 0.25, k_neighbors: int = 5, seed: int = 0
) -> pd.DataFrame:
    """`train` plus SMOTE failures (interpolated between a failure and one of its `k_neighbors` nearest
    failures) up to `target_ratio` failures per non-failure; non-failures are never synthesized."""
    require_inputs(train, "the oversampling's training rows")
    labels = train[LABEL_COLUMN].astype("int64")
    n = rows_to_add(labels, target_ratio)
    failures = int(labels.sum())
    if n == 0:
        return combine(train, train.iloc[:0])
    if failures < 2:
        raise MfdError(f"SMOTE needs at least 2 real failures to interpolate between, got {failures}")
    x = train[["machine_type", *SENSOR_COLUMNS]].astype({"machine_type": object})
    smote = SMOTENC(
        categorical_features=[0],
        sampling_strategy={1: failures + n},
        k_neighbors=min(k_neighbors, failures - 1),
        random_state=seed,
    )
    x_res, y_res = smote.fit_resample(x, labels)
    synthetic = x_res.iloc[len(train) :].reset_index(drop=True)
    synthetic[LABEL_COLUMN] = y_res[len(train) :].to_numpy()
    return combine(train, synthetic)
