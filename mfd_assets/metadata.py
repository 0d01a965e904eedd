"""Metadata the Dagster UI shows at a glance: frames as sortable table metadata (rounded numbers, plain
labels), figures as PNGs no wider than the metadata modal."""

from __future__ import annotations

import math
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mfd.plots import png_markdown

DIGITS = 4  # significant digits of a float cell


def _label(value: Any) -> str:
    """`('raw', 'KNN')` -> `raw / KNN`; anything else as text."""
    if isinstance(value, tuple):
        return " / ".join(str(v) for v in value)
    return str(value)


def _round(value: float, digits: int) -> float:
    if not math.isfinite(value) or value == 0:
        return value
    return round(value, max(0, digits - 1 - math.floor(math.log10(abs(value)))))


def _cell(value: Any, digits: int) -> str | int | float | bool | None:
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _round(float(value), digits)
    return _label(value)


def _type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def flat(df: pd.DataFrame) -> pd.DataFrame:
    """A named or non-range index becomes leading columns; tuple labels become `a / b` text."""
    plain_index = df.index.nlevels == 1 and df.index.name is None and df.index.equals(pd.RangeIndex(len(df)))
    out = df if plain_index else df.reset_index()
    out = out.copy()
    out.columns = [_label(c) for c in out.columns]
    return out


def table(df: pd.DataFrame, digits: int = DIGITS) -> dg.TableMetadataValue:
    """The frame as Dagster table metadata: sortable columns, floats to `digits` significant digits."""
    frame = flat(df)
    schema = dg.TableSchema(columns=[dg.TableColumn(str(c), _type(frame[c])) for c in frame.columns])
    records = [
        dg.TableRecord({str(c): _cell(v, digits) for c, v in zip(frame.columns, row, strict=True)})
        for row in frame.itertuples(index=False, name=None)
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def plot(fig: Figure, alt: str) -> dg.MarkdownMetadataValue:
    """The figure as a PNG that fits the metadata modal (`mfd.plots.png_markdown` caps its width)."""
    return dg.MetadataValue.md(png_markdown(fig, alt))


def rounded(metadata: dict[str, Any], digits: int = DIGITS) -> dict[str, Any]:
    """The metadata with plain float values to `digits` significant digits (`threshold 0.4170489143423529`
    reads 0.417); other values as they are."""
    return {
        k: _round(float(v), digits) if isinstance(v, (float, np.floating)) else v for k, v in metadata.items()
    }
