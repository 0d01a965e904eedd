"""Counter-based random numbers: the same key always gives the same draw, whatever the chunking."""

from __future__ import annotations

import numpy as np


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A counter-based hash: the same key always gives the same 64 random bits, in any chunking."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_uniform(key: np.ndarray, salt: int) -> np.ndarray:
    bits = splitmix64(key ^ splitmix64(np.full(key.shape, salt, dtype=np.uint64)))
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def keyed_normal(key: np.ndarray, salt: int) -> np.ndarray:
    u1, u2 = keyed_uniform(key, 2 * salt), keyed_uniform(key, 2 * salt + 1)
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
