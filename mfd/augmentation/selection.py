"""Which candidate rows join the training data: at random, or the ones nearest the reference rows
(failures, or the rows a baseline model gets wrong) by L1 norm, L2 norm or cosine similarity."""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy.spatial.distance import cdist

from mfd.errors import MfdError

Strategy = Literal["random", "l1", "l2", "cosine"]
STRATEGIES: tuple[str, ...] = ("random", "l1", "l2", "cosine")
_METRIC = {"l1": "cityblock", "l2": "euclidean", "cosine": "cosine"}


def closeness(candidates: np.ndarray, reference: np.ndarray, strategy: Strategy) -> np.ndarray:
    """Per candidate, its distance to the nearest reference row under the strategy's metric (lower =
    closer): L1 or L2 norm of the difference, or 1 - cosine similarity to the most similar reference row."""
    if strategy not in _METRIC:
        raise MfdError(f"no distance for selection strategy {strategy!r}; choose from {list(_METRIC)}")
    if len(reference) == 0:
        raise MfdError("selection by distance needs at least one reference row")
    return cdist(candidates, reference, metric=_METRIC[strategy]).min(axis=1)


def select_rows(
    candidates: np.ndarray, reference: np.ndarray, n: int, strategy: Strategy, seed: int = 0
) -> np.ndarray:
    """Indices of the `n` candidates picked by `strategy` ("random" ignores `reference`), sorted."""
    if strategy not in STRATEGIES:
        raise MfdError(f"unknown selection strategy {strategy!r}; choose from {list(STRATEGIES)}")
    n = min(n, len(candidates))
    if strategy == "random":
        picked = np.random.default_rng(seed).choice(len(candidates), size=n, replace=False)
    else:
        picked = np.argsort(closeness(candidates, reference, strategy), kind="stable")[:n]
    return np.sort(picked)
