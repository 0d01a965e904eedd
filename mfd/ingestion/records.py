"""Where the CSV records of a byte buffer are: quoted fields found in one pass over the quotes (the
state carries from one read to the next, so every byte is scanned once), then each record's offsets,
physical line and field count with numpy.

The quoting rule is the one pandas, Arrow and Python's `csv` share: a `"` opens a quoted field only at the
start of a field; inside one, `""` is a literal quote and a lone `"` closes it; anywhere else (`M-"000`)
a quote is an ordinary character.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

import numpy as np

QUOTE, COMMA, NEWLINE, CR = 34, 44, 10, 13
FIELD_STARTS = (COMMA, NEWLINE, CR)


@dataclass
class QuoteScan:
    """Resumable scan of a buffer that starts at a record start: the quoted fields found so far, whether
    one is still open, and the end of the last whole record (an unquoted newline)."""

    position: int = 0  # bytes before this are scanned
    open_at: int = -1  # start of the quoted field still open, or -1
    record_end: int = 0  # length of the longest prefix of whole records
    spans: list[int] = field(default_factory=list)  # open, close, open, close, ... (offsets of the quotes)
    scanned: int = 0  # bytes visited in total (linear in the input: each byte once)

    def scan(self, buf: bytes, eof: bool) -> None:
        """Advance over `buf[position:]` (buf only ever grows at its end between calls)."""
        end = len(buf)
        pos = self.position
        while pos < end:
            if self.open_at >= 0:
                q = buf.find(b'"', pos)
                if q < 0:
                    self.scanned += end - pos
                    pos = end
                elif q + 1 == end and not eof:  # may be the first of an escaped ""; decide with more bytes
                    self.scanned += q - pos
                    pos = q
                    break
                elif q + 1 < end and buf[q + 1] == QUOTE:
                    self.scanned += q + 2 - pos
                    pos = q + 2
                else:
                    self.spans += (self.open_at, q)
                    self.open_at = -1
                    self.scanned += q + 1 - pos
                    pos = q + 1
                continue
            q = buf.find(b'"', pos)
            stop = end if q < 0 else q
            newline = buf.rfind(b"\n", pos, stop)
            if newline >= 0:
                self.record_end = newline + 1
            self.scanned += stop - pos
            if q < 0:
                pos = end
            else:
                if q == 0 or buf[q - 1] in FIELD_STARTS:
                    self.open_at = q
                pos = q + 1
        self.position = pos

    def cut(self, at: int) -> list[int]:
        """Drop the first `at` bytes (whole records); returns their spans, the rest shift down."""
        split = bisect_left(self.spans, at)
        done, self.spans = self.spans[:split], [s - at for s in self.spans[split:]]
        self.position -= at
        self.record_end -= at
        if self.open_at >= 0:
            self.open_at -= at
        return done


def quoted_spans(data: bytes) -> list[int]:
    """The quoted fields of whole records `data` (open, close, ...); raises ValueError if one never closes."""
    scan = QuoteScan()
    scan.scan(data, eof=True)
    if scan.open_at >= 0:
        raise ValueError(scan.open_at)
    return scan.spans


@dataclass(frozen=True)
class Records:
    """The non-blank records of a block: byte offsets [start, end) without the line end, the physical
    line each starts on, how many fields it has, and whether it spans lines."""

    starts: np.ndarray
    ends: np.ndarray
    lines: np.ndarray
    fields: np.ndarray
    multiline: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)


def find_records(data: bytes, spans: list[int], first_line: int) -> Records:
    """Every non-blank record of `data` (whole records; its quoted fields `spans`), numbered from
    `first_line`: commas and newlines inside quotes do not count."""
    arr = np.frombuffer(data, dtype=np.uint8)
    quoted = np.zeros(len(arr), dtype=bool)
    if spans:
        delta = np.zeros(len(arr) + 1, dtype=np.int32)
        pairs = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
        np.add.at(delta, pairs[:, 0], 1)
        np.add.at(delta, pairs[:, 1] + 1, -1)
        quoted = np.cumsum(delta[:-1]) > 0
    all_newlines = np.flatnonzero(arr == NEWLINE)
    newlines = all_newlines[~quoted[all_newlines]]
    ends = newlines if data.endswith(b"\n") else np.append(newlines, len(arr))
    starts = np.concatenate(([0], newlines + 1))[: len(ends)]
    # A CRLF line's content stops before its CR.
    crlf = (ends > starts) & (arr[np.maximum(ends - 1, 0)] == CR)
    ends = ends - crlf
    keep = ends > starts  # blank lines are not records
    starts, ends = starts[keep], ends[keep]
    commas = np.flatnonzero(arr == COMMA)
    commas = commas[~quoted[commas]]
    fields = np.searchsorted(commas, ends) - np.searchsorted(commas, starts) + 1
    before = np.searchsorted(all_newlines, starts)
    return Records(
        starts=starts,
        ends=ends,
        lines=first_line + before,
        fields=fields,
        multiline=np.searchsorted(all_newlines, ends) > before,
    )
