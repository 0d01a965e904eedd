"""Shifted holdouts: the rows a model meets on another plant, made from the clean holdout or another source.

- measurement noise (`NoiseLevels`): Gaussian noise on each sensor, clipped to the physical ranges; the
  levels are the plant's (`mfd.profiles.physics`: AI4I's, absolute or relative per sensor) or 1 % of each
  sensor's physical range; nothing else changes;
- label noise near the failure thresholds (`LabelNoise`), where the plant has physics rules: the AI4I rules
  are exact cut-offs, a real plant's are not, so a share of the rows close to a threshold get the other
  label; the sensors and every other row stay as they are;
- cross-source (`CrossSource`, AI4I only): train on AI4I and score the generator's fleet, and back.

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
from mfd.generator.fleet import generate_readings
from mfd.modeling.metrics import scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.profiles.physics import plant_physics
from mfd.schema import LABEL_COLUMN, PROFILE, SENSOR_COLUMNS

PLANT_RANGE_SHARE = 0.01  # noise sd of a plant without its own levels: 1 % of each sensor's physical range


def plant_levels() -> tuple[tuple[str, float], ...]:
    """The active plant's noise sd per sensor (its physics' levels, else a share of the physical range)."""
    physics = plant_physics()
    if physics is not None:
        return tuple((c, float(physics.NOISE_LEVELS.get(c, 0.0))) for c in SENSOR_COLUMNS)
    return tuple((s.name, PLANT_RANGE_SHARE * (s.max - s.min)) for s in PROFILE.sensors)


def _relative() -> tuple[str, ...]:
    physics = plant_physics()
    return tuple(physics.RELATIVE_NOISE) if physics is not None else ()


@dataclass(frozen=True)
class NoiseLevels:
    """Measurement noise, one standard deviation per sensor (`levels`: sensor -> sd; the relative sensors
    of the plant's physics as a share of the reading, 0.02 = 2 %, the others in the sensor's unit)."""

    levels: tuple[tuple[str, float], ...] = field(default_factory=plant_levels)
    seed: int = 1

    @classmethod
    def of(cls, seed: int = 1, **overrides: float) -> NoiseLevels:
        """The plant's levels with `overrides` (sensor=sd) and `seed`."""
        unknown = set(overrides) - set(SENSOR_COLUMNS)
        if unknown:
            raise ValueError(f"no such sensor in profile {PROFILE.name}: {', '.join(sorted(unknown))}")
        return cls(tuple((c, float(overrides.get(c, sd))) for c, sd in plant_levels()), seed)

    def level(self, column: str) -> float:
        return dict(self.levels).get(column, 0.0)

    def record(self) -> dict[str, float | int]:
        """Every level and the seed, flat (`noise_<sensor>`, ..., `noise_seed`)."""
        return {**{f"noise_{c}": sd for c, sd in self.levels}, "noise_seed": self.seed}

    def sd(self, df: pd.DataFrame, scale: float = 1.0) -> dict[str, float | np.ndarray]:
        """Per sensor, the noise sd for the rows of `df` (an array for the relative levels)."""
        out: dict[str, float | np.ndarray] = {}
        relative = _relative()
        for col, sd in self.levels:
            level = scale * float(sd)
            if level:
                out[col] = level * df[col].to_numpy(dtype="float64") if col in relative else level
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


def cross_source_applies() -> bool:
    """Cross-source scores need the AI4I file and its physics generator: the `ai4i` plant only."""
    return plant_physics() is not None


@dataclass(frozen=True)
class ShiftConfig:
    noise: NoiseLevels = field(default_factory=NoiseLevels)
    label: LabelNoise = field(default_factory=LabelNoise)
    cross: CrossSource | None = field(
        default_factory=lambda: CrossSource() if cross_source_applies() else None
    )

    def record(self) -> dict[str, float | int]:
        """Every level and seed, flat (`noise_<sensor>`, `label_band`, `cross_seed`, ...)."""
        parts = {"label": self.label, "cross": self.cross}
        flat = {f"{p}_{k}": v for p, obj in parts.items() if obj is not None for k, v in asdict(obj).items()}
        return {**self.noise.record(), **flat}


def near_threshold(df: pd.DataFrame, band: float) -> np.ndarray:
    """Rows within relative distance `band` of one of the plant's failure-rule thresholds (none for a plant
    without physics rules)."""
    physics = plant_physics()
    return physics.near_threshold(df, band) if physics is not None else np.zeros(len(df), dtype=bool)


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
