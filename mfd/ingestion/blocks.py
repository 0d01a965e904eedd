"""An incoming CSV object as a header and blocks of whole records (linear, bounded), and the header rules
(delimiter, missing, extra and duplicate columns) that reject a file before any row is read.

Line ends: LF, CRLF, and a bare CR (old Mac exports, a CR pasted into a line) are all line ends: a bare CR
is read as LF as the bytes come in, so no parser ever meets one. A quoted field that the file ends inside
is set aside as one unreadable record (`Block.unclosed`); the records before it load."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from mfd.ingestion.layouts import Layout
from mfd.ingestion.records import QuoteScan
from mfd.ingestion.rejection import FileRejected
from mfd.schema import PROFILE

MAX_RECORD_BYTES = 1 << 20  # a reading is ~100 bytes; a "record" this long is a quote that never closes
_BARE_CR = re.compile(rb"\r(?!\n)")
UNCLOSED = "row: a quoted field opened on this line never closes (the file ends inside it)"


def bare_crs_as_line_ends(data: bytes) -> bytes:
    """`data` with every CR not followed by LF read as LF (CRLF stays as it is)."""
    if b"\r" not in data or data.count(b"\r") == data.count(b"\r\n"):
        return data
    return _BARE_CR.sub(b"\n", data)


@dataclass(frozen=True)
class Block:
    """Whole CSV records: their bytes, the physical line the first starts on (the header is line 1) and
    their quoted fields (`records.QuoteScan.spans`, offsets into `data`)."""

    data: bytes
    first_line: int
    spans: list[int]
    unclosed: bool = False  # one record the file ends inside (an unclosed quote): set aside whole


class CsvBlocks:
    """The object as a header line and blocks of whole CSV records (never cut inside a quoted field).

    Linear and bounded: the quote state carries from one read to the next (each byte is scanned once),
    and a record that does not end within `max_record` bytes rejects the file as malformed instead of
    being buffered without end.
    """

    def __init__(self, stream: IO[bytes], size: int, max_record: int = MAX_RECORD_BYTES) -> None:
        self.stream, self.size, self.max_record = stream, size, max_record
        self.pending = b""
        self.lines = 0  # data lines handed out (or counted) so far
        self.eof = False
        self.copied = 0  # bytes of an unfinished record carried into the next buffer
        self.quotes = QuoteScan()
        self._header: bytes | None = None
        self._cr = b""  # a CR that ended the last read: a line end of its own unless LF comes next

    def _fill(self) -> bool:
        data = self.stream.read(self.size)
        if not data:
            self.eof = True
            if self._cr:
                self.pending += b"\n"
                self._cr = b""
                return True
            return False
        data, self._cr = self._cr + data, b""
        if data.endswith(b"\r"):
            data, self._cr = data[:-1], b"\r"
        self.copied += len(self.pending)
        self.pending += bare_crs_as_line_ends(data)
        return True

    def _first_line_of_pending(self) -> int:
        return self.lines + 2

    def header(self) -> bytes:
        """The first line (BOM and line end stripped); b"" for a zero-byte object."""
        if self._header is None:
            while b"\n" not in self.pending and len(self.pending) <= self.max_record and self._fill():
                pass
            if b"\n" not in self.pending and len(self.pending) > self.max_record:
                raise FileRejected(
                    "malformed_csv", f"line 1 (the header) runs over {self.max_record:,} bytes without ending"
                )
            line, _, self.pending = self.pending.partition(b"\n")
            self._header = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
            if not self._header and not self.pending and self.eof:
                raise FileRejected("empty_file", "the object is zero bytes: not even a header")
        return self._header

    def first_line(self) -> bytes:
        """The first data line, for examples in a rejection (not consumed)."""
        while (
            b"\n" not in self.pending
            and len(self.pending) <= self.max_record
            and not self.eof
            and self._fill()
        ):
            pass
        return self.pending.partition(b"\n")[0][: self.max_record].rstrip(b"\r")

    def __iter__(self) -> Iterator[Block]:
        scan = self.quotes
        while True:
            scan.scan(self.pending, self.eof)
            if self.eof and scan.open_at < 0:
                scan.record_end = len(self.pending)
            cut = scan.record_end
            if cut > 0:
                data, self.pending = self.pending[:cut], self.pending[cut:]
                block = Block(data, self._first_line_of_pending(), scan.cut(cut))
                self.lines += data.count(b"\n") + (not data.endswith(b"\n"))
                if data.strip():  # trailing blank lines carry no records
                    yield block
            if self.eof:
                if scan.open_at >= 0 and self.pending.strip():
                    # The last record opens a quote the file ends inside: that record alone is set aside.
                    data, self.pending = self.pending, b""
                    yield Block(data, self._first_line_of_pending(), [], unclosed=True)
                    self.lines += data.count(b"\n") + (not data.endswith(b"\n"))
                return
            if len(self.pending) > self.max_record:
                if scan.open_at >= 0:
                    self._unclosed(
                        f"a quoted field opened here is still open after {self.max_record:,} bytes"
                    )
                raise FileRejected(
                    "malformed_csv",
                    f"line {self._first_line_of_pending()} runs over {self.max_record:,} bytes without ending",
                )
            self._fill()

    def _unclosed(self, what: str) -> None:
        line = self._first_line_of_pending() + self.pending.count(b"\n", 0, self.quotes.open_at)
        start = self.pending.rfind(b"\n", 0, self.quotes.open_at) + 1
        example = self.pending[start : start + 200].partition(b"\n")[0].decode("utf-8", errors="replace")
        raise FileRejected("malformed_csv", f"not valid CSV: line {line}: {what}", [], [example])

    def drain_lines(self) -> int:
        """Read the rest, counting lines: how many data lines the whole file has."""
        if self._header is None:
            return 0
        while not self.eof:
            self._fill()
            cut = self.pending.rfind(b"\n") + 1
            self.lines += self.pending.count(b"\n", 0, cut)
            self.pending = self.pending[cut:]
        if self.pending.strip():
            self.lines += self.pending.count(b"\n") + (not self.pending.endswith(b"\n"))
        self.pending = b""
        return self.lines


def source(column: str) -> str:
    """The plant profile's name of a canonical column."""
    return PROFILE.source_name(column)


def check_header(header: bytes, first_line: bytes, layout: Layout) -> list[str]:
    """The file's columns by their canonical names (the plant profile's source names renamed, e.g. a pump's
    `asset_id` -> `machine_id`), or FileRejected naming the rule (delimiter, missing/extra/duplicate
    columns) and the profile."""
    try:
        names = [c.strip() for c in next(csv.reader([header.decode("utf-8")]), [])]
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding", f"the header is not UTF-8 ({exc})") from exc
    except csv.Error as exc:
        raise FileRejected("malformed_csv", f"the header line is not valid CSV ({exc})") from exc
    data = first_line.decode("utf-8", errors="replace")
    examples = dict(zip(names, next(csv.reader([data]), []), strict=False)) if data else {}
    required, allowed = [source(c) for c in layout.required], [source(c) for c in layout.columns]
    expected = f"plant profile {PROFILE.name} expects a comma-separated header with {', '.join(required)}"
    if len(names) == 1:
        for delimiter in (";", "\t", "|"):
            split = names[0].split(delimiter)
            if len(split) > 1:
                raise FileRejected(
                    "wrong_delimiter",
                    f"columns are separated by {delimiter!r}, not ','; {expected}",
                    [c.strip() for c in split],
                    [data],
                )
    duplicated = sorted({c for c in names if names.count(c) > 1})
    if duplicated:
        raise FileRejected("duplicate_columns", f"columns appear twice; {expected}", duplicated, examples)
    missing = [c for c in required if c not in names]
    if missing:
        raise FileRejected("missing_columns", f"required columns are missing; {expected}", missing, examples)
    extra = [c for c in names if c not in allowed]
    if extra:
        raise FileRejected(
            "unexpected_columns",
            f"columns not in plant profile {PROFILE.name} (allowed: {', '.join(allowed)})",
            extra,
            {c: examples.get(c) for c in extra},
        )
    return [PROFILE.to_canonical.get(c, c) for c in names]
