"""The AI4I failure physics as rules, and how near a reading is to each: heat dissipation (process minus
air temperature below 8.6 K at under 1,380 rpm), power (torque x angular speed outside 3,500-9,000 W),
overstrain (tool wear x torque above 11,000 / 12,000 / 13,000 min.Nm for L / M / H).

A rule's margin is how far the reading is from firing, relative to the limit it must cross: 0.05 means a
5 % move fires it; a negative margin means it fires (and by how much it is past the limit)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfd.features import physics
from mfd.schema import SENSOR_COLUMNS

HDF_TEMPERATURE_K = 8.6
HDF_SPEED_RPM = 1380.0
POWER_LOW_W, POWER_HIGH_W = 3500.0, 9000.0
OVERSTRAIN_LIMIT = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}

RULES: tuple[str, ...] = ("heat_dissipation", "power", "overstrain")


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
    limit = readings["machine_type"].map(OVERSTRAIN_LIMIT).to_numpy(dtype="float64", na_value=np.nan)
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
    types = readings["machine_type"].astype(str).to_numpy()
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
