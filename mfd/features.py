"""Derived features of a reading (the active profile's `derived`, e.g. AI4I's failure physics) and the model's
input matrix: sensors, derived features, one-hot segment, and, where the profile declares `windows`, the
machine-window features of `mfd.windows` (WINDOW_COLUMNS). Window features need the machine's earlier
readings, so they are columns computed before a model is called (`add_windows`, or detection's and
`/predict`'s history); a frame without them is taken to hold its machines' readings from the start of their
lives, and they are computed from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mfd.profiles import MACHINE, TIMESTAMP
from mfd.schema import MACHINE_TYPES, PROFILE, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.windows import WindowSpec, window_features

PHYSICS_COLUMNS: tuple[str, ...] = PROFILE.derived_columns
TYPE_COLUMNS: tuple[str, ...] = tuple(f"type_{t}" for t in MACHINE_TYPES) if PROFILE.segment_column else ()
# The profile's windows over all its sensors, or None where it declares none (AI4I: snapshot readings).
WINDOW_SPEC: WindowSpec | None = WindowSpec.of(PROFILE) if PROFILE.windows_declared else None
WINDOW_COLUMNS: tuple[str, ...] = WINDOW_SPEC.columns if WINDOW_SPEC else ()
FEATURE_COLUMNS: tuple[str, ...] = (*SENSOR_COLUMNS, *PHYSICS_COLUMNS, *TYPE_COLUMNS, *WINDOW_COLUMNS)


def physics(sensors: Mapping[str, Any]) -> dict[str, Any]:
    """The profile's derived features from sensor columns (Series or arrays)."""
    return {d.name: d.expression.evaluate(sensors) for d in PROFILE.derived}


def add_physics(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with the derived features added."""
    return df.assign(**physics(df)) if PROFILE.derived else df.copy()


def add_windows(df: pd.DataFrame, resets: pd.DataFrame | None = None) -> pd.DataFrame:
    """`df` with the WINDOW_COLUMNS (none where the profile declares no windows), computed over `df` taken
    as its machines' readings in time order; `resets`: maintenance records (machine_id, timestamp)."""
    if WINDOW_SPEC is None:
        return df
    features = window_features(df, WINDOW_SPEC, resets)
    return pd.concat([df.drop(columns=list(WINDOW_COLUMNS), errors="ignore"), features], axis=1)


def _window_block(df: pd.DataFrame) -> np.ndarray:
    """The WINDOW_COLUMNS of `df` as an array: read where present, else computed over the frame."""
    if all(c in df.columns for c in WINDOW_COLUMNS):
        return df[list(WINDOW_COLUMNS)].to_numpy(dtype="float64", na_value=np.nan)
    if MACHINE not in df.columns or TIMESTAMP not in df.columns:
        raise ValueError(
            f"profile {PROFILE.name} scores machine-window features: send the window columns or the "
            f"readings' {MACHINE} and {TIMESTAMP} (mfd.features.add_windows)"
        )
    return window_features(df, WINDOW_SPEC).to_numpy()


def feature_array(df: pd.DataFrame) -> np.ndarray:
    """Model inputs as a float64 array (rows x FEATURE_COLUMNS), read column by column without copying the
    frame: sensors, derived features, one-hot segment (NaN if the segment is missing), window features."""
    out = np.empty((len(df), len(FEATURE_COLUMNS)))
    if WINDOW_COLUMNS:
        out[:, len(FEATURE_COLUMNS) - len(WINDOW_COLUMNS) :] = _window_block(df)
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
    out[missing, first : first + len(TYPE_COLUMNS)] = np.nan
    return out


def feature_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """Model inputs (`feature_array`) as a frame with FEATURE_COLUMNS. Never the failure modes."""
    return pd.DataFrame(feature_array(df), index=df.index, columns=list(FEATURE_COLUMNS))
