"""One block of CSV records parsed into a `Chunk`: Arrow's reader for the common case, pandas' C reader (and
a per-value diagnosis) for the rest. Records the readers cannot take (a wrong field count, bytes that are
not UTF-8, a control character inside a field) are taken out first and come back as rows marked
`unreadable`, so that one of them costs its own row, never the file or the block's fast path.

Timestamps are ISO 8601 as spelled by `ISO_TIMESTAMP` and nothing else: words pandas and PostgreSQL both
take (`now`, `today`, `epoch`, `infinity`) would be stored at each one's own clock."""

from __future__ import annotations

import csv
import io
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from itertools import compress
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv

from mfd.ingestion.blocks import Block
from mfd.ingestion.layouts import Layout
from mfd.ingestion.records import NEWLINE, QUOTE, Records, find_records, quoted_spans
from mfd.ingestion.rejection import FileRejected

NA_TEXT = ("", "NA", "N/A", "NaN", "nan", "-nan", "NULL", "null", "None", "#N/A")
CATEGORICAL = ("machine_id", "machine_type")
NOT_UTF8 = "row: not UTF-8 text"
# C0 control characters but LF and CR (line ends; a bare CR is read as LF before parsing), and DEL: readers
# cut a value at a NUL, PostgreSQL refuses it; a row holding one is set aside whole.
CONTROL = bytes([*range(0x00, 0x0A), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_CONTROL_TABLE = bytes(1 if i in CONTROL else 0 for i in range(256))
ISO_TIMESTAMP = (
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)


def control_label(byte: int) -> str:
    return f"row: control character U+{byte:04X} inside a field"


def has_control(data: bytes) -> bool:
    return len(data.translate(None, CONTROL)) != len(data)


@dataclass
class Chunk:
    """One parsed block: numeric columns as float64, text as object, one row per non-blank record.

    `unreadable` marks rows that could not be parsed (label -> mask; their values are all missing);
    `far_timestamps` marks ISO 8601 timestamps beyond what pandas can hold (year 9999)."""

    frame: pd.DataFrame
    timestamps: pd.Series
    unparsable: dict[str, np.ndarray]
    text: pd.DataFrame | None
    block: Block
    flags: tuple[str, ...]
    unreadable: dict[str, np.ndarray] = field(default_factory=dict)
    far_timestamps: np.ndarray | None = None
    simple: bool = False  # one row per line and no quotes: the block's lines are the rows

    @cached_property
    def records(self) -> Records:
        """Where each row is in the block (its bytes and physical line)."""
        return find_records(self.block.data, self.block.spans, self.block.first_line)

    def line_numbers(self, rows: np.ndarray) -> np.ndarray:
        """The physical line in the file (1 = header) each selected row starts on."""
        if self.simple:
            return self.block.first_line + np.flatnonzero(rows)
        return self.records.lines[rows]

    def raw(self, good: np.ndarray) -> bytes | None:
        """The good rows as CSV lines PostgreSQL reads like pandas: as written, except a line holding a quote
        is written again (PostgreSQL would take a quote inside a field, `M-"000`, as opening one); None
        when a row spans lines."""
        data = self.block.data
        if self.simple and good.all():
            return data
        if self.block.spans and self.records.multiline[good].any():
            return None
        arr = np.frombuffer(data, dtype=np.uint8)
        if self.simple or _one_row_per_line(data, len(good)):
            lines = data.removesuffix(b"\n").split(b"\n")
            quoted = np.searchsorted(np.flatnonzero(arr == NEWLINE), np.flatnonzero(arr == QUOTE))
        else:
            starts, ends = self.records.starts.tolist(), self.records.ends.tolist()
            lines = [data[s:e] for s, e in zip(starts, ends, strict=True)]
            quoted = np.searchsorted(self.records.starts, np.flatnonzero(arr == QUOTE), side="right") - 1
        for i in np.unique(quoted).tolist():
            if good[i]:
                lines[i] = _requoted(lines[i])
        return b"\n".join(compress(lines, good.tolist())) + b"\n"

    def typed(self, good: np.ndarray) -> pd.DataFrame:
        """The good rows, flags as Int8 and timestamps parsed (UTC)."""
        out = self.frame.loc[good].copy()
        for flag in self.flags:
            out[flag] = out[flag].astype("Int8")
        out["timestamp"] = self.timestamps.loc[good]
        return out

    def original(self, rows: np.ndarray) -> pd.DataFrame:
        """The selected rows as written in the file (text), for the bad-rows file; an unreadable row's
        fields fill the columns in order (extra fields stay in the last one, joined by commas)."""
        columns = list(self.frame.columns)
        unreadable = np.zeros(len(rows), dtype=bool)
        for mask in self.unreadable.values():
            unreadable |= mask
        if self.text is not None and not unreadable.any():
            return self.text.loc[rows].reset_index(drop=True)
        records = self.records
        data = self.block.data
        out = []
        for i in np.flatnonzero(rows).tolist():
            text = data[records.starts[i] : records.ends[i]].decode("utf-8", errors="replace")
            try:
                values = next(csv.reader([text]), [])
            except csv.Error:  # a bare CR inside: not a line end here, so no reader takes the record whole
                values = text.split(",")
            if len(values) > len(columns):
                values = [*values[: len(columns) - 1], ",".join(values[len(columns) - 1 :])]
            out.append(values + [""] * (len(columns) - len(values)))
        return pd.DataFrame(out, columns=columns, dtype=object)


def _requoted(line: bytes) -> bytes:
    """One CSV line read the way pandas reads it and written with standard quoting."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow(next(csv.reader([line.decode("utf-8")])))
    return buffer.getvalue().encode("utf-8")


def _read(data: bytes, columns: list[str], dtypes: dict[str, Any], numeric: tuple[str, ...]) -> pd.DataFrame:
    """pandas' C reader on records known to be well formed; a value that does not convert to its dtype
    raises ValueError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            return pd.read_csv(
                io.BytesIO(_bom_kept(data)),
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


def parse(block: Block | bytes, columns: list[str], layout: Layout) -> Chunk:
    """Parse whole records (a `Block`, or bytes of records numbered from line 2)."""
    if isinstance(block, bytes):
        block = Block(block, 2, quoted_spans(block))
    numeric = tuple(c for c in columns if c in layout.ranges or c in layout.flags)
    flags = tuple(c for c in layout.flags if c in columns)
    data = block.data
    frame = None if has_control(data) else _read_arrow(data, columns, numeric)
    if frame is not None:
        simple = not block.spans and b'"' not in data and _one_row_per_line(data, len(frame))
        chunk = Chunk(frame, frame["timestamp"], {}, None, block, flags, simple=simple)
        if simple or len(chunk.records) == len(frame):
            return chunk
        # Arrow also ends a row at a bare CR; records end at LF or CRLF only: check them one by one.
    chunk = Chunk(pd.DataFrame(), pd.Series(dtype=object), {}, None, block, flags)
    unreadable = _unreadable(data, chunk.records, len(columns))
    readable = ~np.logical_or.reduce([*unreadable.values(), np.zeros(len(chunk.records), dtype=bool)])
    if not readable.all():
        records = chunk.records
        data = b"".join(
            data[s:e] + b"\n"
            for s, e in zip(records.starts[readable].tolist(), records.ends[readable].tolist(), strict=True)
        )
    frame = _read_arrow(data, columns, numeric) if not readable.all() else None
    text = None
    unparsable: dict[str, np.ndarray] = {}
    if frame is not None:
        timestamps = frame["timestamp"]
        far = None
    elif not data:
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
        timestamps, far = pd.Series(dtype="datetime64[ns, UTC]"), None
    else:
        # Numbers and 0/1 flags as float64, repeated labels as categories: few Python objects per row.
        fast = {c: "float64" if c in numeric else "category" if c in CATEGORICAL else object for c in columns}
        try:
            frame = _read(data, columns, fast, numeric)
        except ValueError:  # text in a numeric column: parse as text, mark what does not convert
            text = _read(data, columns, dict.fromkeys(columns, object), numeric)
            frame = text.copy()
            for c in numeric:
                frame[c] = pd.to_numeric(text[c], errors="coerce")
                unparsable[c] = (frame[c].isna() & text[c].notna()).to_numpy()
        timestamps, far = _timestamps(frame["timestamp"])
    if not readable.all():  # the unreadable rows back in their places, all values missing
        rows = np.flatnonzero(readable)
        frame = _spread(frame, rows, len(readable))
        timestamps = _spread(timestamps, rows, len(readable))
        text = None if text is None else _spread(text, rows, len(readable))
        unparsable = {c: _spread_mask(m, readable) for c, m in unparsable.items()}
        far = None if far is None else _spread_mask(far, readable)
    if len(frame) != len(chunk.records):
        raise FileRejected(
            "malformed_csv",
            f"not valid CSV: lines {block.first_line}-{chunk.records.lines[-1]} give {len(frame)} rows "
            f"for {len(chunk.records)} records",
            columns,
            [_first_lines(block.data)],
        )
    simple = readable.all() and b'"' not in data and _one_row_per_line(data, len(frame))
    return Chunk(frame, timestamps, unparsable, text, block, flags, unreadable, far, simple)


def _one_row_per_line(data: bytes, rows: int) -> bool:
    """No blank lines, no bare CRs, and as many lines as rows."""
    return (
        b"\n\n" not in data
        and b"\n\r\n" not in data
        and not data.startswith((b"\n", b"\r"))
        and data.count(b"\r") == data.count(b"\r\n")
        and data.count(b"\n") + (not data.endswith(b"\n")) == rows
    )


def _unreadable(data: bytes, records: Records, width: int) -> dict[str, np.ndarray]:
    """Records no reader can type: another number of fields than the header has, or bytes not UTF-8."""
    found: dict[str, np.ndarray] = {}
    for count in np.unique(records.fields[records.fields != width]).tolist():
        label = f"row: {count} field{'' if count == 1 else 's'}, the header has {width}"
        found[label] = records.fields == count
    if has_control(data):
        found.update(_controls(data, records))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        found[NOT_UTF8] = np.array(
            [
                not _is_utf8(data[s:e])
                for s, e in zip(records.starts.tolist(), records.ends.tolist(), strict=True)
            ],
            dtype=bool,
        )
    return found


def _controls(data: bytes, records: Records) -> dict[str, np.ndarray]:
    """One mask per control character found: the records holding it (a record's first one names it)."""
    arr = np.frombuffer(data, dtype=np.uint8)
    at = np.flatnonzero(np.frombuffer(data.translate(_CONTROL_TABLE), dtype=np.uint8))
    row = np.searchsorted(records.starts, at, side="right") - 1
    inside = (row >= 0) & (at < records.ends[np.maximum(row, 0)])
    at, row = at[inside], row[inside]
    first = np.unique(row, return_index=True)[1]
    found: dict[str, np.ndarray] = {}
    for byte in np.unique(arr[at[first]]).tolist():
        mask = np.zeros(len(records), dtype=bool)
        mask[row[first][arr[at[first]] == byte]] = True
        found[control_label(byte)] = mask
    return found


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _spread(frame: Any, rows: np.ndarray, length: int) -> Any:
    """`frame`'s rows at positions `rows` of `length` rows, the others missing."""
    frame = frame.reset_index(drop=True)
    frame.index = rows
    return frame.reindex(range(length))


def _spread_mask(mask: np.ndarray, readable: np.ndarray) -> np.ndarray:
    out = np.zeros(len(readable), dtype=bool)
    out[readable] = mask
    return out


def _timestamps(text: pd.Series) -> tuple[pd.Series, np.ndarray | None]:
    """ISO 8601 text as UTC timestamps, and which of those that failed are real timestamps pandas cannot
    hold (before 1677 or after 2262, e.g. 9999-12-31): outside any plausible window, not unparsable."""
    iso = text.astype("string").str.fullmatch(ISO_TIMESTAMP).fillna(False).to_numpy(dtype=bool)
    stamps = pd.to_datetime(text.where(iso), format="ISO8601", utc=True, errors="coerce")
    failed = (stamps.isna() & text.notna()).to_numpy()
    if not failed.any():
        return stamps, None
    far = np.zeros(len(text), dtype=bool)
    far[failed & iso] = [_is_iso_timestamp(v) for v in text[failed & iso]]
    return stamps, far


def _is_iso_timestamp(value: object) -> bool:
    try:
        datetime.fromisoformat(str(value).strip())
    except ValueError:
        return False
    return True


def _read_arrow(block: bytes, columns: list[str], numeric: tuple[str, ...]) -> pd.DataFrame | None:
    """Arrow's CSV reader, on this thread (the other core is PostgreSQL's), for the common case: every
    record has the header's fields, every number parses and every timestamp carries its UTC offset. None
    for anything else (text in a number, a zoneless or odd timestamp, a field count, not UTF-8), which
    then goes through the record check, pandas and the full diagnosis."""
    types = {c: pa.float64() if c in numeric else pa.dictionary(pa.int32(), pa.string()) for c in columns}
    types["timestamp"] = pa.timestamp("us", tz="UTC")
    try:
        table = pa_csv.read_csv(
            io.BytesIO(_bom_kept(block)),
            read_options=pa_csv.ReadOptions(column_names=columns, use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            convert_options=pa_csv.ConvertOptions(
                column_types=types, null_values=[""], strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, UnicodeDecodeError):
        return None
    return table.to_pandas()


def _bom_kept(data: bytes) -> bytes:
    """`data` as the readers must get it: both drop a BOM that starts their input, which here is a row's
    first value (the file's own BOM went with its header), so a blank line goes first (no row)."""
    return b"\n" + data if data.startswith(b"\xef\xbb\xbf") else data


def _first_lines(block: bytes, count: int = 3) -> str:
    return b"\n".join(block.split(b"\n", count)[:count]).decode("utf-8", errors="replace")
