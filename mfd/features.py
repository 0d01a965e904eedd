"""Physics features derived from a reading (AI4I failure physics) and the model's input matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfd.schema import MACHINE_TYPES, SENSOR_COLUMNS

PHYSICS_COLUMNS: tuple[str, ...] = ("temperature_difference_k", "power_w", "strain_min_nm")
TYPE_COLUMNS: tuple[str, ...] = tuple(f"type_{t}" for t in MACHINE_TYPES)
FEATURE_COLUMNS: tuple[str, ...] = (*SENSOR_COLUMNS, *PHYSICS_COLUMNS, *TYPE_COLUMNS)


def angular_speed(rpm: np.ndarray | pd.Series) -> np.ndarray | pd.Series:
    """Rotational speed in rad/s."""
    return rpm * (2.0 * np.pi / 60.0)


def add_physics(df: pd.DataFrame) -> pd.DataFrame:
    """Copy of `df` with temperature difference, mechanical power and wear x torque added."""
    out = df.copy()
    out["temperature_difference_k"] = out["process_temperature_k"] - out["air_temperature_k"]
    out["power_w"] = out["torque_nm"] * angular_speed(out["rotational_speed_rpm"])
    out["strain_min_nm"] = out["tool_wear_min"] * out["torque_nm"]
    return out


def feature_matrix(df: pd.DataFrame) -> pd.DataFrame:
    """Model inputs: sensors, physics features and one-hot machine type. Never the failure modes."""
    out = add_physics(df[["machine_type", *SENSOR_COLUMNS]])
    for t, col in zip(MACHINE_TYPES, TYPE_COLUMNS, strict=True):
        out[col] = (out["machine_type"] == t).astype("float64")
    return out[list(FEATURE_COLUMNS)].astype("float64")
