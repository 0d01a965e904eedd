"""Rows that failed validation, spooled to a CSV file beside the rejected/ copy: as written, plus the
physical line of the file each starts on (1 = the header) and why."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from mfd.ingestion.blocks import Block
from mfd.ingestion.parsing import Chunk
from mfd.ingestion.spool import CsvSpool


class BadRows(CsvSpool):
    """Rows that failed validation, as written in the file plus `line` and `reason` columns, spooled to disk."""

    def add(self, chunk: Chunk, bad: np.ndarray, problems: dict[str, np.ndarray], tally: Counter) -> None:
        rows = chunk.original(bad).reset_index(drop=True)
        rows["line"] = chunk.line_numbers(bad)
        reasons = pd.Series("", index=np.flatnonzero(bad), dtype=object)
        for label, mask in problems.items():
            hit = mask[bad]
            tally[label] += int(hit.sum())
            reasons[hit] = reasons[hit] + "; " + label
        rows["reason"] = reasons.str.removeprefix("; ").to_numpy()
        self.write(rows)

    def add_record(self, block: Block, columns: list[str], reason: str, tally: Counter) -> None:
        """One record no parser can take (`block` holds it alone): its text split at commas fills the
        columns in order (the rest joined into the last one)."""
        text = block.data.decode("utf-8", errors="replace").rstrip("\r\n")
        values = text.split(",")
        if len(values) > len(columns):
            values = [*values[: len(columns) - 1], ",".join(values[len(columns) - 1 :])]
        row = dict(zip(columns, values + [""] * (len(columns) - len(values)), strict=True))
        tally[reason] += 1
        self.write(pd.DataFrame([{**row, "line": block.first_line, "reason": reason}]))
