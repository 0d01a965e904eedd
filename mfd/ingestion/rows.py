"""The row rules of an incoming file (from `mfd.validation`, via its layout) as one boolean mask per problem:
a row the parser could not read (field count, encoding) has that one problem; a readable row every
problem it has (missing, range, category, flag, timestamp and its plausible window).

Text columns (the machine key) are compared byte for byte, so a value with whitespace around it, or an
invisible character anywhere in it (a zero-width space, a BOM, a bidi mark, a non-breaking space, a tab),
would store another machine: such a row is refused, never normalized (`INVISIBLE`)."""

from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd

from mfd.ingestion.layouts import Layout
from mfd.ingestion.parsing import Chunk


def row_problems(chunk: Chunk, layout: Layout) -> dict[str, np.ndarray]:
    """One boolean mask per problem (`column: what is wrong`); a row is bad when any mask is set."""
    frame = chunk.frame
    problems: dict[str, np.ndarray] = {label: m for label, m in chunk.unreadable.items() if m.any()}
    readable = ~np.logical_or.reduce([*problems.values(), np.zeros(len(frame), dtype=bool)])

    def add(label: str, mask: np.ndarray) -> None:
        mask = mask & readable  # an unreadable row has one problem: it could not be read
        if mask.any():
            problems[label] = mask

    ranges = layout.ranges
    for column in layout.required:
        if column not in ranges:
            add(f"{column}: missing", frame[column].isna().to_numpy())
    for column, rule in layout.rules.items():
        if rule.kind == "text" and column in frame.columns:
            add(f"{column}: {INVISIBLE}", _invisible(frame[column]))
        if rule.max_length is not None and frame[column].notna().any():
            add(
                f"{column}: longer than {rule.max_length} characters",
                (frame[column].str.len() > rule.max_length).fillna(False).to_numpy(dtype=bool),
            )
    far = np.zeros(len(frame), dtype=bool) if chunk.far_timestamps is None else chunk.far_timestamps
    add(
        "timestamp: not an ISO 8601 timestamp",
        (chunk.timestamps.isna() & frame["timestamp"].notna()).to_numpy() & ~far,
    )
    for column, window in layout.windows.items():
        low, high = window.bounds()
        stamps = chunk.timestamps if column == "timestamp" else frame[column]
        with np.errstate(invalid="ignore"):
            outside = ((stamps < low) | (stamps > high)).to_numpy(dtype=bool)
        add(f"{column}: {window.describe()}", outside | far)
    for column, allowed in layout.categories.items():
        add(
            f"{column}: not one of {', '.join(allowed)}",
            (~frame[column].isin(allowed) & frame[column].notna()).to_numpy(),
        )
    for column, bounds in ranges.items():
        values = frame[column].to_numpy(dtype=np.float64)
        broken = chunk.unparsable.get(column)
        if broken is not None:
            add(f"{column}: not a number", broken)
        missing = np.isnan(values) if broken is None else np.isnan(values) & ~broken
        add(f"{column}: missing or NaN", missing)
        with np.errstate(invalid="ignore"):
            add(
                f"{column}: outside [{bounds.low:g}, {bounds.high:g}] {bounds.unit}",
                (values < bounds.low) | (values > bounds.high),
            )
    for column in layout.flags:
        if column in frame.columns:
            values = frame[column].to_numpy(dtype=np.float64)
            broken = chunk.unparsable.get(column, False)
            add(f"{column}: not 0 or 1", (~np.isin(values, (0.0, 1.0)) & ~np.isnan(values)) | broken)
    return problems


INVISIBLE = "whitespace around it or an invisible character in it (keys are compared byte for byte)"
_SHOWN = (" ", "\n")  # a plain space, and a line break inside a quoted value: seen when the key is printed


def _is_invisible(value: object) -> bool:
    """Whitespace at either end, or a character that prints as nothing (format, control, separators but
    the plain space and a line break inside a quoted value) anywhere."""
    if not isinstance(value, str) or not value:
        return False
    if value != value.strip():
        return True
    return any(unicodedata.category(c)[0] in "CZ" and c not in _SHOWN for c in value if not c.isalnum())


def _invisible(values: pd.Series) -> np.ndarray:
    """Which values are `_is_invisible`, judged once per distinct value."""
    distinct = (
        values.cat.categories if isinstance(values.dtype, pd.CategoricalDtype) else values.dropna().unique()
    )
    bad = [v for v in distinct if _is_invisible(v)]
    if not bad:
        return np.zeros(len(values), dtype=bool)
    return values.isin(bad).to_numpy(dtype=bool)
