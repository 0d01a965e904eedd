"""Header lines met again inside a file (two exports concatenated): the same columns in the same order are
not rows and are skipped; another order sets aside every row after it, with its line named in the reason.

A repeated header line is blanked (its bytes removed, its line end kept), so physical line numbers stay
right and no parser ever sees it; it is not a row and is not counted as read. The rows after a header with
another column order are never realigned by name: each is a bad row with the reason `AFTER_OTHER_HEADER`.
"""

from __future__ import annotations

import csv
from dataclasses import replace

import numpy as np

from mfd.ingestion.blocks import Block
from mfd.ingestion.layouts import Layout
from mfd.ingestion.parsing import Chunk
from mfd.ingestion.records import quoted_spans

_BOM = "\ufeff"


def header_names(line: bytes) -> list[str] | None:
    """The column names of `line` read as a CSV header; None when it is not text CSV."""
    try:
        text = line.decode("utf-8").removeprefix(_BOM)
        return [c.strip() for c in next(csv.reader([text]), [])]
    except (UnicodeDecodeError, csv.Error):
        return None


class RepeatedHeaders:
    """Finds header lines inside the blocks of one file whose header gave `columns`."""

    def __init__(self, columns: list[str], layout: Layout) -> None:
        self.columns = columns
        self.known = set(layout.columns)
        self.required = set(layout.required)
        self.needle = layout.required[0].encode()
        self.other_at: int | None = None  # the line of the first header with another order
        self.other: list[str] = []

    @property
    def reason(self) -> str:
        return (
            f"row: after a second header on line {self.other_at} with another column order "
            f"({', '.join(self.other)}): set aside, not realigned"
        )

    def _is_header(self, names: list[str] | None) -> bool:
        return bool(names) and len(names) > 1 and set(names) <= self.known and self.required <= set(names)

    def blank(self, block: Block) -> Block:
        """`block` with every header line blanked; the first one with another order is remembered."""
        data = block.data
        if block.unclosed or self.needle not in data:
            return block
        found = []
        at = data.find(self.needle)
        while at >= 0:
            start = data.rfind(b"\n", 0, at) + 1
            end = data.find(b"\n", at)
            end = len(data) if end < 0 else end
            names = header_names(data[start:end].rstrip(b"\r"))
            if self._is_header(names) and (not found or found[-1][0] != start):
                found.append((start, end, names))
            at = data.find(self.needle, end)
        if not found:
            return block
        pieces, last = [], 0
        for start, end, names in found:
            pieces.append(data[last:start])
            last = end
            if names != self.columns and self.other_at is None:
                self.other_at = block.first_line + data.count(b"\n", 0, start)
                self.other = names
        pieces.append(data[last:])
        blanked = b"".join(pieces)
        try:
            spans = quoted_spans(blanked)
        except ValueError:  # a "header" inside a quoted value after all: leave the block as it was
            return block
        return replace(block, data=blanked, spans=spans)

    def set_aside(self, chunk: Chunk, problems: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`problems` with every row after a header of another order set aside by that one reason."""
        if self.other_at is None or not len(chunk.frame):
            return problems
        rows = np.ones(len(chunk.frame), dtype=bool)
        aside = chunk.line_numbers(rows) > self.other_at
        if not aside.any():
            return problems
        kept = {label: mask & ~aside for label, mask in problems.items()}
        return {**{k: m for k, m in kept.items() if m.any()}, self.reason: aside}
