"""Shifted holdouts: the rows a model meets on another plant, made from the clean holdout or another source.

- measurement noise (`NoiseLevels`): Gaussian noise on each sensor, absolute for the temperatures and tool
  wear, relative for speed and torque, clipped to the physical ranges; nothing else changes;
- label noise near the failure thresholds (`LabelNoise`): the AI4I rules are exact cut-offs, a real plant's
  are not, so a share of the rows close to a heat-dissipation, power or overstrain threshold get the other
  label; the sensors and every other row stay as they are;
- cross-source (`CrossSource`): train on AI4I and score the generator's fleet, and the other way round.

Every level and seed is a field of `ShiftConfig`, recorded with the scores (`ShiftConfig.record`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline

from mfd.augmentation.corruption import sensor_noise
from mfd.features import angular_speed
from mfd.generator.fleet import (
    HDF_DIFF_K,
    HDF_SPEED_RPM,
    OSF_LIMIT_MIN_NM,
    PWF_HIGH_W,
    PWF_LOW_W,
    generate_readings,
)
from mfd.modeling.metrics import scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.reference import load_ai4i
from mfd.schema import LABEL_COLUMN, SENSOR_COLUMNS

RELATIVE_NOISE: tuple[str, ...] = ("rotational_speed_rpm", "torque_nm")


@dataclass(frozen=True)
class NoiseLevels:
    """Measurement noise, one standard deviation per sensor: K and min absolute, speed and torque as a
    share of the reading (0.02 = 2 %)."""

    air_temperature_k: float = 0.5
    process_temperature_k: float = 0.5
    rotational_speed_rpm: float = 0.02
    torque_nm: float = 0.03
    tool_wear_min: float = 5.0
    seed: int = 1

    def sd(self, df: pd.DataFrame, scale: float = 1.0) -> dict[str, float | np.ndarray]:
        """Per sensor, the noise sd for the rows of `df` (an array for the relative levels)."""
        out: dict[str, float | np.ndarray] = {}
        for col in SENSOR_COLUMNS:
            level = scale * float(getattr(self, col))
            if level:
                out[col] = level * df[col].to_numpy(dtype="float64") if col in RELATIVE_NOISE else level
        return out

    def apply(self, df: pd.DataFrame, seed: int | None = None, scale: float = 1.0) -> pd.DataFrame:
        """`df` with the noise added (seeded with `seed`, by default the levels' own)."""
        rng = np.random.default_rng(self.seed if seed is None else seed)
        return sensor_noise(df, rng, self.sd(df, scale))


@dataclass(frozen=True)
class LabelNoise:
    """Of the rows within `band` (relative distance) of a failure threshold, a `flip` share, drawn with
    `seed`, gets the other label."""

    band: float = 0.05
    flip: float = 0.3
    seed: int = 2


@dataclass(frozen=True)
class CrossSource:
    """The two sources, `rows` readings each: a label-stratified sample of the AI4I file and the generator's
    fleet of `machines` (both drawn with `seed`)."""

    machines: int = 20
    rows: int = 5_000
    seed: int = 7


@dataclass(frozen=True)
class ShiftConfig:
    noise: NoiseLevels = field(default_factory=NoiseLevels)
    label: LabelNoise = field(default_factory=LabelNoise)
    cross: CrossSource | None = field(default_factory=CrossSource)

    def record(self) -> dict[str, float | int]:
        """Every level and seed, flat (`noise_torque_nm`, `label_band`, `cross_seed`, ...)."""
        parts = {"noise": self.noise, "label": self.label, "cross": self.cross}
        return {f"{p}_{k}": v for p, obj in parts.items() if obj is not None for k, v in asdict(obj).items()}


def _near(value: np.ndarray, threshold: float | np.ndarray, band: float) -> np.ndarray:
    return np.abs(value / threshold - 1.0) < band


def near_threshold(df: pd.DataFrame, band: float) -> np.ndarray:
    """Rows within relative distance `band` of a failure rule's threshold: heat dissipation (temperature
    difference and speed), power (both limits) or overstrain (wear x torque against the type's limit)."""
    air, process = df["air_temperature_k"].to_numpy(float), df["process_temperature_k"].to_numpy(float)
    speed, torque = df["rotational_speed_rpm"].to_numpy(float), df["torque_nm"].to_numpy(float)
    wear = df["tool_wear_min"].to_numpy(float)
    diff = process - air
    hdf = (_near(diff, HDF_DIFF_K, band) & (speed < HDF_SPEED_RPM * (1 + band))) | (
        _near(speed, HDF_SPEED_RPM, band) & (diff < HDF_DIFF_K * (1 + band))
    )
    power = torque * angular_speed(speed)
    pwf = _near(power, PWF_LOW_W, band) | _near(power, PWF_HIGH_W, band)
    limit = (
        df["machine_type"].astype("string").map(OSF_LIMIT_MIN_NM).to_numpy(dtype="float64", na_value=np.nan)
    )
    osf = _near(wear * torque, limit, band)
    return hdf | pwf | osf


def label_noise(df: pd.DataFrame, noise: LabelNoise) -> pd.DataFrame:
    """`df` with the labels of a `noise.flip` share of its near-threshold rows flipped."""
    rng = np.random.default_rng(noise.seed)
    flip = near_threshold(df, noise.band) & (rng.random(len(df)) < noise.flip)
    out = df.copy()
    labels = out[LABEL_COLUMN].astype("int64").to_numpy()
    out[LABEL_COLUMN] = np.where(flip, 1 - labels, labels)
    return out


def shifted_holdouts(holdout: pd.DataFrame, config: ShiftConfig) -> dict[str, pd.DataFrame]:
    """The clean holdout and its shifted copies, by name: `clean`, `noisy`, `label_noise`."""
    return {
        "clean": holdout,
        "noisy": config.noise.apply(holdout),
        "label_noise": label_noise(holdout, config.label),
    }


@lru_cache(maxsize=4)
def _sources(cross: CrossSource) -> tuple[pd.DataFrame, pd.DataFrame]:
    ai4i = load_ai4i()
    if cross.rows < len(ai4i):
        ai4i, _ = train_test_split(
            ai4i, train_size=cross.rows, stratify=ai4i[LABEL_COLUMN], random_state=cross.seed
        )
    return ai4i.reset_index(drop=True), generate_readings(cross.machines, cross.rows, cross.seed)


def cross_sources(cross: CrossSource) -> dict[str, pd.DataFrame]:
    """The two sources: `ai4i` (the vendored file) and `fleet` (generated readings)."""
    ai4i, fleet = _sources(cross)
    return {"ai4i": ai4i, "fleet": fleet}


def _score(pipeline: Pipeline, rows: pd.DataFrame, threshold: float) -> dict[str, float]:
    y = rows[LABEL_COLUMN].astype("int64").to_numpy()
    return scores(y, pipeline.predict_proba(rows[list(MODEL_INPUT_COLUMNS)])[:, 1], threshold)


def shifted_scores(
    pipeline: Pipeline,
    threshold: float,
    holdout: pd.DataFrame,
    config: ShiftConfig,
    fit: Callable[[pd.DataFrame], Pipeline] | None = None,
) -> dict[str, dict[str, float]]:
    """Scores of `pipeline` on the clean and each shifted holdout; with `fit` (training rows -> fitted
    pipeline of the same family and params) and `config.cross`, also `ai4i->fleet` and `fleet->ai4i`."""
    out = {
        name: _score(pipeline, rows, threshold) for name, rows in shifted_holdouts(holdout, config).items()
    }
    if fit is not None and config.cross is not None:
        sources = cross_sources(config.cross)
        out |= cross_source_scores(
            {train: fit(rows) for train, rows in sources.items()}, config.cross, threshold
        )
    return out


def cross_source_scores(
    fitted: Mapping[str, Pipeline], cross: CrossSource, threshold: float
) -> dict[str, dict[str, float]]:
    """`ai4i->fleet` / `fleet->ai4i` scores of the pipelines `fitted` on a source (keyed by its name, see
    `cross_sources`), each scored on the other source; a source missing from `fitted` is left out."""
    sources = cross_sources(cross)
    return {
        f"{train}->{test}": _score(fitted[train], sources[test], threshold)
        for train, test in (("ai4i", "fleet"), ("fleet", "ai4i"))
        if train in fitted
    }


SHIFTS: tuple[str, ...] = ("clean", "noisy", "label_noise", "ai4i->fleet", "fleet->ai4i")
