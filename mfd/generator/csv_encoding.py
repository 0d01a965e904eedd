"""Readings as CSV bytes in the layout `incoming/` expects."""

from __future__ import annotations

import io
from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from mfd.schema import SENSOR_COLUMNS


def to_csv_bytes(df: pd.DataFrame, names: Mapping[str, str] | None = None) -> bytes:
    """CSV with a header, timestamps as `2026-01-01 00:00:13.968Z` (UTC, milliseconds); `names` renames
    columns in the header (canonical -> a profile's source names; `timestamp` is the frame's time column).

    Written by Arrow (several times faster than pandas); frames Arrow cannot write unquoted (text in
    numeric columns from injected defects, commas or quotes in values) go through pandas, same layout.
    """
    if not any(df[c].dtype == object for c in SENSOR_COLUMNS if c in df.columns):
        table = pa.Table.from_pandas(df, preserve_index=False)
        at = table.schema.get_field_index("timestamp")
        table = table.set_column(at, "timestamp", table.column(at).cast(pa.timestamp("ms", tz="UTC")))
        if names:
            table = table.rename_columns([names.get(c, c) for c in table.column_names])
        sink = io.BytesIO()
        try:
            pa_csv.write_csv(table, sink, pa_csv.WriteOptions(quoting_style="none", quoting_header="none"))
            return sink.getvalue()
        except pa.ArrowInvalid:
            pass  # a value needs quoting
    out = df.copy()
    stamps = pd.to_datetime(out["timestamp"], utc=True).dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    out["timestamp"] = stamps.str[:-3] + "Z"
    return out.rename(columns=dict(names or {})).to_csv(index=False).encode()
