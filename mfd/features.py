"""Physics features derived from a reading (AI4I failure physics) and the model's input matrix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from mfd.schema import MACHINE_TYPES, SENSOR_COLUMNS

PHYSICS_COLUMNS: tuple[str, ...] = ("temperature_difference_k", "power_w", "strain_min_nm")
TYPE_COLUMNS: tuple[str, ...] = tuple(f"type_{t}" for t in MACHINE_TYPES)
FEATURE_COLUMNS: tuple[str, ...] = (*SENSOR_COLUMNS, *PHYSICS_COLUMNS, *TYPE_COLUMNS)


def angular_speed(rpm: np.ndarray | pd.Series) -> np.ndarray | pd.Series:
    """Rotational speed in rad/s."""
    return rpm * (2.0 * np.pi / 60.0)


def physics(sensors: Mapping[str, Any]) -> dict[str, Any]:
    """Temperature difference, mechanical power and wear x torque from sensor columns (Series or arrays)."""
    return {
        "temperature_difference_k": sensors["process_temperature_k"] - sensors["air_temperature_k"],
        "power_w": sensors["torque_nm"] * angular_speed(sensors["rotational_speed_rpm"]),
        "strain_min_nm": sensors["tool_wear_min"] * sensors["torque_nm"],
    }


def add_physics(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with the physics features added."""
    return df.assign(**physics(df))


def feature_array(df: pd.DataFrame) -> np.ndarray:
    """Model inputs as a float64 array (rows x FEATURE_COLUMNS), read column by column without copying the
    frame: sensors, physics features, one-hot machine type (NaN if the type is missing)."""
    out = np.empty((len(df), len(FEATURE_COLUMNS)))
    sensors = {}
    for i, col in enumerate(SENSOR_COLUMNS):
        out[:, i] = df[col].to_numpy(dtype="float64", na_value=np.nan)
        sensors[col] = out[:, i]
    derived = physics(sensors)
    for i, col in enumerate(PHYSICS_COLUMNS, start=len(SENSOR_COLUMNS)):
        out[:, i] = derived[col]
    types = df["machine_type"].to_numpy()
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
