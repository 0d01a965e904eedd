"""The layout every augmented set shares, and how real and synthetic rows are put together."""

from __future__ import annotations

import math

import pandas as pd

from mfd.errors import MfdError
from mfd.features import PHYSICS_COLUMNS, add_physics
from mfd.schema import LABEL_COLUMN, MACHINE_TYPES, SENSOR_COLUMNS
from mfd.validation import SENSOR_RANGES

AUGMENTED_COLUMNS: tuple[str, ...] = (
    "id",
    "machine_id",
    "timestamp",
    "machine_type",
    *SENSOR_COLUMNS,
    *PHYSICS_COLUMNS,
    LABEL_COLUMN,
    "synthetic",
)
INPUT_COLUMNS: tuple[str, ...] = ("machine_type", *SENSOR_COLUMNS, LABEL_COLUMN)


def require_inputs(df: pd.DataFrame, what: str) -> None:
    """Raise naming the missing columns / bad values when `df` cannot be augmented."""
    missing = [c for c in INPUT_COLUMNS if c not in df.columns]
    if missing:
        raise MfdError(f"{what} lacks column(s) {missing} needed for augmentation")
    if df[list(INPUT_COLUMNS)].isna().any().any():
        raise MfdError(f"{what} has missing values in {list(INPUT_COLUMNS)}: clean them before augmenting")
    bad_types = set(df["machine_type"].unique()) - set(MACHINE_TYPES)
    if bad_types:
        raise MfdError(f"{what} has unknown machine types {sorted(bad_types)}; expected {MACHINE_TYPES}")


def clip_sensors(df: pd.DataFrame, columns: tuple[str, ...] = SENSOR_COLUMNS) -> pd.DataFrame:
    """Sensor values clipped into the physical ranges of mfd.schema (in place; returns `df`)."""
    for col in columns:
        df[col] = df[col].clip(SENSOR_RANGES[col].low, SENSOR_RANGES[col].high)
    return df


def rows_to_add(labels: pd.Series, target_ratio: float) -> int:
    """Synthetic failures needed so that failures / non-failures reaches `target_ratio` (0 if it already does)."""
    if target_ratio <= 0:
        raise MfdError(f"target_ratio (failures per non-failure) must be positive, got {target_ratio}")
    failures = int(labels.astype("int64").sum())
    return max(0, math.ceil(target_ratio * (len(labels) - failures)) - failures)


def combine(real: pd.DataFrame, synthetic: pd.DataFrame) -> pd.DataFrame:
    """Real rows then synthetic rows in the augmented layout; physics recomputed from the sensors."""
    kept = [c for c in AUGMENTED_COLUMNS if c not in (*PHYSICS_COLUMNS, "synthetic")]
    real = real.reindex(columns=kept).assign(synthetic=False)
    synthetic = synthetic[list(INPUT_COLUMNS)].reindex(columns=kept).assign(synthetic=True)
    real["id"] = real["id"].astype("Int64")
    real["machine_id"] = real["machine_id"].astype("string")
    for col in ("id", "machine_id", "timestamp"):
        synthetic[col] = synthetic[col].astype(real[col].dtype)
    out = add_physics(pd.concat([real, synthetic], ignore_index=True))[list(AUGMENTED_COLUMNS)]
    out["machine_type"] = out["machine_type"].astype("string")
    out[LABEL_COLUMN] = out[LABEL_COLUMN].astype("Int8")
    out["synthetic"] = out["synthetic"].astype(bool)
    for col in SENSOR_COLUMNS:
        out[col] = out[col].astype("float64")
    return out
