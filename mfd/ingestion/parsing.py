"""One block of CSV records parsed into a `Chunk`: Arrow's reader for the common clean case, pandas' C reader
(and a per-value diagnosis) for everything else."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from mfd.ingestion.layouts import Layout
from mfd.ingestion.rejection import FileRejected

NA_TEXT = ("", "NA", "N/A", "NaN", "nan", "-nan", "NULL", "null", "None", "#N/A")
CATEGORICAL = ("machine_id", "machine_type")


@dataclass
class Chunk:
    """One parsed block: numeric columns as float64, text as object; the raw lines when they align."""

    frame: pd.DataFrame
    timestamps: pd.Series
    unparsable: dict[str, np.ndarray]
    text: pd.DataFrame | None
    aligned: bool
    block: bytes
    flags: tuple[str, ...]

    @cached_property
    def lines(self) -> list[bytes] | None:
        """The block's lines, one per row, or None when rows and lines do not align."""
        return self.block.removesuffix(b"\n").split(b"\n") if self.aligned else None

    def raw(self, good: np.ndarray) -> bytes | None:
        """The good rows' original CSV lines, or None when lines and rows do not align one to one."""
        if self.lines is None:
            return None
        if good.all():
            return self.block
        return b"\n".join([line for line, ok in zip(self.lines, good, strict=True) if ok]) + b"\n"

    def typed(self, good: np.ndarray) -> pd.DataFrame:
        """The good rows, flags as Int8 and timestamps parsed (UTC)."""
        out = self.frame.loc[good].copy()
        for flag in self.flags:
            out[flag] = out[flag].astype("Int8")
        out["timestamp"] = self.timestamps.loc[good]
        return out

    def original(self, rows: np.ndarray) -> pd.DataFrame:
        """The rows as written in the file (text), for the bad-rows file."""
        if self.text is not None:
            return self.text.loc[rows]
        if self.lines is not None:
            lines = b"\n".join(line for line, bad in zip(self.lines, rows, strict=True) if bad)
            return _read(lines, list(self.frame.columns), dict.fromkeys(self.frame.columns, object), ())
        return self.frame.loc[rows]


def _read(data: bytes, columns: list[str], dtypes: dict[str, Any], numeric: tuple[str, ...]) -> pd.DataFrame:
    """pandas' C reader; a structural CSV error rejects the file, a value that does not convert to its
    dtype raises ValueError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                io.BytesIO(data),
                header=None,
                names=columns,
                dtype=dtypes,
                index_col=False,
                keep_default_na=False,
                na_values={c: list(NA_TEXT) if c in numeric else [""] for c in columns},
                encoding="utf-8",
            )
    except (pd.errors.ParserError, pd.errors.ParserWarning) as exc:
        raise FileRejected(
            "malformed_csv", f"not valid CSV ({str(exc).strip()})", columns, [_first_lines(data)]
        ) from exc
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding", f"the file is not UTF-8 text ({exc})", columns) from exc


def parse(block: bytes, columns: list[str], layout: Layout) -> Chunk:
    numeric = tuple(c for c in columns if c in layout.ranges or c in layout.flags)
    text = None
    unparsable: dict[str, np.ndarray] = {}
    frame = _read_arrow(block, columns, numeric)
    if frame is not None:
        timestamps = frame["timestamp"]
    else:
        # Numbers and 0/1 flags as float64, repeated labels as categories: few Python objects per row.
        fast = {c: "float64" if c in numeric else "category" if c in CATEGORICAL else object for c in columns}
        try:
            frame = _read(block, columns, fast, numeric)
        except ValueError:  # text in a numeric column: parse as text, mark what does not convert
            text = _read(block, columns, dict.fromkeys(columns, object), numeric)
            frame = text.copy()
            for c in numeric:
                frame[c] = pd.to_numeric(text[c], errors="coerce")
                unparsable[c] = (frame[c].isna() & text[c].notna()).to_numpy()
        timestamps = pd.to_datetime(frame["timestamp"], format="ISO8601", utc=True, errors="coerce")
    # Rows map one to one onto lines unless quotes, blank lines or bare CRs are involved.
    aligned = (
        b'"' not in block
        and b"\n\n" not in block
        and b"\n\r\n" not in block
        and not block.startswith((b"\n", b"\r"))
        and block.count(b"\r") == block.count(b"\r\n")
        and block.count(b"\n") + (not block.endswith(b"\n")) == len(frame)
    )
    return Chunk(
        frame, timestamps, unparsable, text, aligned, block, tuple(c for c in layout.flags if c in columns)
    )


def _read_arrow(block: bytes, columns: list[str], numeric: tuple[str, ...]) -> pd.DataFrame | None:
    """Arrow's CSV reader, on this thread (the other core is PostgreSQL's), for the common case: no quoting,
    every number parses and every timestamp carries its UTC offset. None for anything else (text in a
    number, a zoneless or odd timestamp, a quote, a structural error), which then goes through pandas and
    the full diagnosis."""
    if b'"' in block:
        return None
    types = {c: pa.float64() if c in numeric else pa.dictionary(pa.int32(), pa.string()) for c in columns}
    types["timestamp"] = pa.timestamp("us", tz="UTC")
    try:
        table = pa_csv.read_csv(
            io.BytesIO(block),
            read_options=pa_csv.ReadOptions(column_names=columns, use_threads=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return table.to_pandas()


def _first_lines(block: bytes, count: int = 3) -> str:
    return b"\n".join(block.split(b"\n", count)[:count]).decode("utf-8", errors="replace")
