"""An incoming CSV object as a header and blocks of whole records, and the header rules (delimiter,
missing, extra and duplicate columns) that reject a file before any row is read."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import IO

from mfd.ingestion.layouts import Layout
from mfd.ingestion.rejection import FileRejected


class CsvBlocks:
    """The object as a header line and blocks of whole CSV records (never cut inside a quoted field)."""

    def __init__(self, stream: IO[bytes], size: int) -> None:
        self.stream, self.size = stream, size
        self.pending = b""
        self.lines = 0
        self.eof = False
        self._header: bytes | None = None

    def _fill(self) -> bool:
        data = self.stream.read(self.size)
        if not data:
            self.eof = True
            return False
        self.pending += data
        return True

    def header(self) -> bytes:
        """The first line (BOM and line end stripped); b"" for a zero-byte object."""
        if self._header is None:
            while b"\n" not in self.pending and self._fill():
                pass
            line, _, self.pending = self.pending.partition(b"\n")
            self._header = line.removeprefix(b"\xef\xbb\xbf").rstrip(b"\r")
            if not self._header and not self.pending and self.eof:
                raise FileRejected("empty_file", "the object is zero bytes: not even a header")
        return self._header

    def first_line(self) -> bytes:
        """The first data line, for examples in a rejection (not consumed)."""
        while b"\n" not in self.pending and not self.eof and self._fill():
            pass
        return self.pending.partition(b"\n")[0].rstrip(b"\r")

    def __iter__(self) -> Iterator[bytes]:
        while True:
            if not self.eof:
                self._fill()
            cut = _record_end(self.pending) if not self.eof else len(self.pending)
            if cut <= 0:
                if self.eof:
                    return
                continue
            block, self.pending = self.pending[:cut], self.pending[cut:]
            self.lines += block.count(b"\n") + (not block.endswith(b"\n"))
            if block.strip():  # trailing blank lines carry no records
                yield block

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


def _record_end(buf: bytes) -> int:
    """Length of the longest prefix of whole records: up to a newline outside any quoted field."""
    cut = buf.rfind(b"\n")
    while cut >= 0 and buf.count(b'"', 0, cut) % 2:
        cut = buf.rfind(b"\n", 0, cut)
    return cut + 1


def check_header(header: bytes, first_line: bytes, layout: Layout) -> list[str]:
    """The file's columns, or FileRejected naming the rule (delimiter, missing/extra/duplicate columns)."""
    try:
        names = [c.strip() for c in next(csv.reader([header.decode("utf-8")]), [])]
    except UnicodeDecodeError as exc:
        raise FileRejected("encoding", f"the header is not UTF-8 ({exc})") from exc
    except csv.Error as exc:
        raise FileRejected("malformed_csv", f"the header line is not valid CSV ({exc})") from exc
    data = first_line.decode("utf-8", errors="replace")
    examples = dict(zip(names, next(csv.reader([data]), []), strict=False)) if data else {}
    expected = f"expected a comma-separated header with {', '.join(layout.required)}"
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
    missing = [c for c in layout.required if c not in names]
    if missing:
        raise FileRejected("missing_columns", f"required columns are missing; {expected}", missing, examples)
    extra = [c for c in names if c not in layout.columns]
    if extra:
        raise FileRejected(
            "unexpected_columns",
            f"columns not in the schema (allowed: {', '.join(layout.columns)})",
            extra,
            {c: examples.get(c) for c in extra},
        )
    return names
