"""Rows that failed validation, spooled to a CSV file beside the rejected/ copy: as written, plus the
physical line of the file each starts on (1 = the header) and why."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

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
