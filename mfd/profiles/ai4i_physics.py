"""The `ai4i` profile's plant knowledge: its failure physics as rules, and how near a reading is to each: heat dissipation (process minus
air temperature below 8.6 K at under 1,380 rpm), power (torque x angular speed outside 3,500-9,000 W),
overstrain (tool wear x torque above 11,000 / 12,000 / 13,000 min.Nm for L / M / H).

A rule's margin is how far the reading is from firing, relative to the limit it must cross: 0.05 means a
5 % move fires it; a negative margin means it fires (and by how much it is past the limit). Also the
measurement-noise levels of the shifted holdouts, the rows near a rule's threshold (label noise) and the
sensors that follow the plant's slow ambient walk (drift). Used where the active profile's generator is
`ai4i` (`mfd.profiles.physics`); other plants have no physics rules."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfd.profiles import SEGMENT as SEGMENT_COLUMN
from mfd.profiles import shipped

_AI4I = shipped("ai4i")
SENSOR_COLUMNS: tuple[str, ...] = _AI4I.sensor_columns


def physics(sensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The `ai4i` profile's derived features (temperature difference, power, wear x torque)."""
    return {d.name: d.expression.evaluate(sensors) for d in _AI4I.derived}


HDF_TEMPERATURE_K = 8.6
HDF_SPEED_RPM = 1380.0
POWER_LOW_W, POWER_HIGH_W = 3500.0, 9000.0
OVERSTRAIN_LIMIT = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}

RULES: tuple[str, ...] = ("heat_dissipation", "power", "overstrain")

# Measurement noise of the shifted holdouts, one sd per sensor: K and min absolute, speed and torque as a
# share of the reading.
NOISE_LEVELS: dict[str, float] = {
    "air_temperature_k": 0.5,
    "process_temperature_k": 0.5,
    "rotational_speed_rpm": 0.02,
    "torque_nm": 0.03,
    "tool_wear_min": 5.0,
}
RELATIVE_NOISE: tuple[str, ...] = ("rotational_speed_rpm", "torque_nm")
# The temperatures follow the plant's slow ambient walk: a window of a few hours covers a narrow slice of
# the reference's range, so its shape differs even when nothing changed (either half of AI4I itself has a
# KS statistic of 0.16-0.17 against the whole on process temperature).
SLOW_FEATURES: frozenset[str] = frozenset(
    {"air_temperature_k", "process_temperature_k", "temperature_difference_k"}
)


def rule_margins(readings: pd.DataFrame) -> pd.DataFrame:
    """Relative margin to each rule per reading (rows as `readings`, one column per rule)."""
    derived = physics({c: readings[c].to_numpy(dtype="float64") for c in SENSOR_COLUMNS})
    rpm = readings["rotational_speed_rpm"].to_numpy(dtype="float64")
    # both conditions must hold: the farther one decides
    heat = np.maximum(
        (derived["temperature_difference_k"] - HDF_TEMPERATURE_K) / HDF_TEMPERATURE_K,
        (rpm - HDF_SPEED_RPM) / HDF_SPEED_RPM,
    )
    power_w = derived["power_w"]
    power = np.minimum((power_w - POWER_LOW_W) / POWER_LOW_W, (POWER_HIGH_W - power_w) / POWER_HIGH_W)
    limit = readings[SEGMENT_COLUMN].map(OVERSTRAIN_LIMIT).to_numpy(dtype="float64", na_value=np.nan)
    strain = (limit - derived["strain_min_nm"]) / limit
    return pd.DataFrame(
        {"heat_dissipation": heat, "power": power, "overstrain": strain}, index=readings.index
    )


def rule_hits(readings: pd.DataFrame) -> np.ndarray:
    """True where any rule fires (margin <= 0)."""
    return (rule_margins(readings).to_numpy() <= 0).any(axis=1)


def _details(rule: np.ndarray, readings: pd.DataFrame) -> list[str]:
    derived = physics({c: readings[c].to_numpy(dtype="float64") for c in SENSOR_COLUMNS})
    rpm = readings["rotational_speed_rpm"].to_numpy(dtype="float64")
    types = readings[SEGMENT_COLUMN].astype(str).to_numpy()
    out = []
    for i, name in enumerate(rule):
        if name == "heat_dissipation":
            out.append(
                f"process - air {derived['temperature_difference_k'][i]:.2f} K (fires below "
                f"{HDF_TEMPERATURE_K} K) at {rpm[i]:.0f} rpm (and below {HDF_SPEED_RPM:.0f} rpm)"
            )
        elif name == "power":
            out.append(
                f"power {derived['power_w'][i]:.0f} W (fires outside {POWER_LOW_W:.0f}-{POWER_HIGH_W:.0f} W)"
            )
        else:
            limit = OVERSTRAIN_LIMIT.get(types[i], float("nan"))
            out.append(
                f"wear x torque {derived['strain_min_nm'][i]:.0f} min.Nm (fires above {limit:.0f} for {types[i]})"
            )
    return out


def nearest_rules(readings: pd.DataFrame) -> list[dict[str, object]]:
    """Per reading: the rule with the smallest margin, whether it fires, the margin and the values."""
    margins = rule_margins(readings)
    if margins.empty:
        return []
    values = margins.fillna(np.inf).to_numpy()
    which = values.argmin(axis=1)
    margin = values[np.arange(len(values)), which]
    rule = np.asarray(RULES)[which]
    return [
        {"rule": str(r), "fires": bool(m <= 0), "margin": round(float(m), 4), "detail": d}
        for r, m, d in zip(rule, margin, _details(rule, readings), strict=True)
    ]


def _near(value: np.ndarray, threshold: float | np.ndarray, band: float) -> np.ndarray:
    return np.abs(value / threshold - 1.0) < band


def near_threshold(df: pd.DataFrame, band: float) -> np.ndarray:
    """Rows within relative distance `band` of a failure rule's threshold: heat dissipation (temperature
    difference and speed), power (both limits) or overstrain (wear x torque against the type's limit)."""
    derived = physics({c: df[c].to_numpy(dtype="float64") for c in SENSOR_COLUMNS})
    diff, power = derived["temperature_difference_k"], derived["power_w"]
    speed = df["rotational_speed_rpm"].to_numpy(float)
    hdf = (_near(diff, HDF_TEMPERATURE_K, band) & (speed < HDF_SPEED_RPM * (1 + band))) | (
        _near(speed, HDF_SPEED_RPM, band) & (diff < HDF_TEMPERATURE_K * (1 + band))
    )
    pwf = _near(power, POWER_LOW_W, band) | _near(power, POWER_HIGH_W, band)
    limit = (
        df[SEGMENT_COLUMN].astype("string").map(OVERSTRAIN_LIMIT).to_numpy(dtype="float64", na_value=np.nan)
    )
    osf = _near(derived["strain_min_nm"], limit, band)
    return hdf | pwf | osf
