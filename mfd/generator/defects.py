"""Bad input on purpose: rows with one defect each, and whole bad files, for testing ingestion."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mfd.generator.csv_encoding import to_csv_bytes
from mfd.profiles import SEGMENT
from mfd.schema import SENSOR_COLUMNS
from mfd.validation import SENSOR_RANGES

ROW_DEFECTS: tuple[str, ...] = ("nan", "out_of_range", "text", "bad_type", "duplicate")
FILE_DEFECTS: tuple[str, ...] = ("missing_columns", "empty")
DEFECT_TEXT = "sensor-error"
DEFECT_TYPE = "X"


def inject_defects(df: pd.DataFrame, rate: float, seed: int) -> tuple[pd.DataFrame, dict[str, int]]:
    """Copy of `df` where a `rate` share of rows carries exactly one defect; returns it and counts per kind.

    Kinds (each detectable from the content alone): `nan` (one sensor empty), `out_of_range` (one sensor
    at twice its schema maximum), `text` (one sensor reads "sensor-error"), `bad_type` (machine_type "X"),
    `duplicate` (an extra exact copy of a good row, right after it: its (machine_id, timestamp) repeats).
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must be within [0, 1], got {rate}")
    rng = np.random.default_rng(seed)
    n = len(df)
    hit = rng.random(n) < rate
    kind = np.where(hit, rng.integers(0, len(ROW_DEFECTS), n), -1)
    column = rng.integers(0, len(SENSOR_COLUMNS), n)
    out = df.copy()
    text_rows = kind == ROW_DEFECTS.index("text")
    if text_rows.any():
        out = out.astype({c: object for c in SENSOR_COLUMNS})
    for i, name in enumerate(SENSOR_COLUMNS):
        col = out.columns.get_loc(name)
        out.iloc[np.flatnonzero((kind == ROW_DEFECTS.index("nan")) & (column == i)), col] = np.nan
        out.iloc[np.flatnonzero((kind == ROW_DEFECTS.index("out_of_range")) & (column == i)), col] = (
            2.0 * SENSOR_RANGES[name].high
        )
        out.iloc[np.flatnonzero(text_rows & (column == i)), col] = DEFECT_TEXT
    if SEGMENT in out.columns:  # a profile without an attribute has no segment to spoil
        out.loc[kind == ROW_DEFECTS.index("bad_type"), SEGMENT] = DEFECT_TYPE
    else:
        kind[kind == ROW_DEFECTS.index("bad_type")] = -1
    dup = kind == ROW_DEFECTS.index("duplicate")
    if dup.any():
        order = np.concatenate([np.arange(n), np.flatnonzero(dup)])
        out = out.iloc[np.sort(order)]
    counts = {name: int((kind == i).sum()) for i, name in enumerate(ROW_DEFECTS)}
    return out.reset_index(drop=True), counts


def defect_file(
    df: pd.DataFrame, kind: str, seed: int, encode: Callable[[pd.DataFrame], bytes] = to_csv_bytes
) -> bytes:
    """A whole bad CSV: `missing_columns` (the rows without one required sensor column) or `empty` (0 bytes)."""
    if kind == "empty":
        return b""
    if kind != "missing_columns":
        raise ValueError(f"unknown file defect {kind!r}; expected one of {FILE_DEFECTS}")
    dropped = SENSOR_COLUMNS[np.random.default_rng(seed).integers(0, len(SENSOR_COLUMNS))]
    return encode(df.drop(columns=[dropped]))
