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
# Most bytes of one block of candidate x reference distances: the whole matrix of 168,000 corrupted
# candidates x 11,900 failures (a 340,000-row training set) would take 16 GB.
BLOCK_BYTES = 64 * 2**20


def block_rows(reference_rows: int, block_bytes: int = BLOCK_BYTES) -> int:
    """Candidates per block of float64 distances to `reference_rows` rows within `block_bytes` (at least 1)."""
    return max(1, block_bytes // (8 * max(reference_rows, 1)))


def closeness(
    candidates: np.ndarray, reference: np.ndarray, strategy: Strategy, block_bytes: int = BLOCK_BYTES
) -> np.ndarray:
    """Per candidate, its distance to the nearest reference row under the strategy's metric (lower =
    closer): L1 or L2 norm of the difference, or 1 - cosine similarity to the most similar reference row.
    Computed in blocks of candidates (`block_rows`), so memory stays bounded whatever the row counts."""
    if strategy not in _METRIC:
        raise MfdError(f"no distance for selection strategy {strategy!r}; choose from {list(_METRIC)}")
    if len(reference) == 0:
        raise MfdError("selection by distance needs at least one reference row")
    step = block_rows(len(reference), block_bytes)
    nearest = np.empty(len(candidates))
    for start in range(0, len(candidates), step):
        block = cdist(candidates[start : start + step], reference, metric=_METRIC[strategy])
        nearest[start : start + step] = block.min(axis=1)
    return nearest


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
