"""Training and selecting for the plant a model will meet: the selection objective (clean, or robust =
clean and noisy validation scores together) and noise-jittered training copies.

The noisy validation rows are the tuning folds' own validation rows with measurement noise added (seeded
per fold, apart from the shifted holdout's seed): tuning never sees the holdout, clean or shifted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mfd.errors import MfdError
from mfd.modeling.shifts import NoiseLevels

OBJECTIVES: tuple[str, ...] = ("robust", "clean")
# Seed offsets: the noisy validation folds and the jittered copies never reuse the holdout's noise draw.
VALIDATION_SEED_OFFSET = 1000
JITTER_SEED_OFFSET = 2000


@dataclass(frozen=True)
class Robustness:
    """How candidates are selected and trained: `objective` (`robust`: the mean of `metric` on the clean
    and on the noisy validation folds; `clean`: `metric` on the clean folds, the old objective), the noise
    of the noisy folds, and `jitter_copies` noisy copies (levels x `jitter_scale`) added to every fit."""

    objective: str = "robust"
    noise: NoiseLevels = field(default_factory=NoiseLevels)
    jitter_copies: int = 0
    jitter_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise MfdError(f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if self.jitter_copies < 0:
            raise MfdError(f"jitter_copies must be zero or more, got {self.jitter_copies}")

    @property
    def robust(self) -> bool:
        return self.objective == "robust"

    def value(self, clean: float, noisy: float) -> float:
        """The objective from a clean and a noisy score of the same metric."""
        return (clean + noisy) / 2 if self.robust else clean

    def noisy_validation(self, rows: pd.DataFrame, fold: int) -> pd.DataFrame:
        """Validation rows of tuning fold `fold` with measurement noise."""
        return self.noise.apply(rows, seed=self.noise.seed + VALIDATION_SEED_OFFSET + fold)

    def jittered(self, rows: pd.DataFrame, seed: int) -> pd.DataFrame:
        """`rows` followed by `jitter_copies` noisy copies of them (labels kept); `rows` when none."""
        if not self.jitter_copies:
            return rows
        copies = [
            self.noise.apply(
                rows, seed=self.noise.seed + JITTER_SEED_OFFSET + 97 * seed + k, scale=self.jitter_scale
            )
            for k in range(self.jitter_copies)
        ]
        return pd.concat([rows, *copies], ignore_index=True)

    def record(self) -> dict[str, object]:
        return {
            "objective": self.objective,
            "jitter_copies": self.jitter_copies,
            "jitter_scale": self.jitter_scale,
        }


def combined(
    y: np.ndarray, clean: np.ndarray, noisy: np.ndarray, robust: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The validation labels and probabilities a threshold or calibrator is fit on: the clean ones, and,
    for the robust objective, the noisy ones after them."""
    if not robust:
        return y, clean
    return np.concatenate([y, y]), np.concatenate([clean, noisy])
