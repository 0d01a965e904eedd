"""Derived features of a reading (the active profile's `derived`, e.g. AI4I's failure physics) and the model's
input matrix: sensors, derived features, one-hot segment."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mfd.schema import MACHINE_TYPES, PROFILE, SEGMENT_COLUMN, SENSOR_COLUMNS

PHYSICS_COLUMNS: tuple[str, ...] = PROFILE.derived_columns
TYPE_COLUMNS: tuple[str, ...] = tuple(f"type_{t}" for t in MACHINE_TYPES) if PROFILE.segment_column else ()
FEATURE_COLUMNS: tuple[str, ...] = (*SENSOR_COLUMNS, *PHYSICS_COLUMNS, *TYPE_COLUMNS)


def physics(sensors: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's derived features from sensor columns (Series or arrays)."""
    return {d.name: d.expression.evaluate(sensors) for d in PROFILE.derived}


def add_physics(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with the derived features added."""
    return df.assign(**physics(df)) if PROFILE.derived else df.copy()


def feature_array(df: pd.DataFrame) -> np.ndarray:
    """Model inputs as a float64 array (rows x FEATURE_COLUMNS), read column by column without copying the
    frame: sensors, derived features, one-hot segment (NaN if the segment is missing)."""
    out = np.empty((len(df), len(FEATURE_COLUMNS)))
    sensors = {}
    for i, col in enumerate(SENSOR_COLUMNS):
        out[:, i] = df[col].to_numpy(dtype="float64", na_value=np.nan)
        sensors[col] = out[:, i]
    derived = physics(sensors)
    for i, col in enumerate(PHYSICS_COLUMNS, start=len(SENSOR_COLUMNS)):
        out[:, i] = derived[col]
    if not TYPE_COLUMNS:
        return out
    types = df[SEGMENT_COLUMN].to_numpy()
    missing = pd.isna(types)
    # pd.NA has no truth value: compare None instead (to_numpy(na_value=None) costs ~10x more per call).
    if missing.any():
        types = np.where(missing, None, types)
    first = len(SENSOR_COLUMNS) + len(PHYSICS_COLUMNS)
    for i, machine_type in enumerate(MACHINE_TYPES, start=first):
        out[:, i] = types == machine_type
    out[missing, first:] = np.nan
    return out


def feature_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """Model inputs (`feature_array`) as a frame with FEATURE_COLUMNS. Never the failure modes."""
    return pd.DataFrame(feature_array(df), index=df.index, columns=list(FEATURE_COLUMNS))
