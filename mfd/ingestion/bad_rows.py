"""Rows that failed validation, spooled to a CSV file beside the rejected/ copy: as written, plus the
physical line of the file each starts on (1 = the header) and why."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from mfd.ingestion.parsing import Chunk


class BadRows:
    """Rows that failed validation, as written in the file plus `line` and `reason` columns, spooled to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def add(self, chunk: Chunk, bad: np.ndarray, problems: dict[str, np.ndarray], tally: Counter) -> None:
        rows = chunk.original(bad).reset_index(drop=True)
        rows["line"] = chunk.line_numbers(bad)
        reasons = pd.Series("", index=np.flatnonzero(bad), dtype=object)
        for label, mask in problems.items():
            hit = mask[bad]
            tally[label] += int(hit.sum())
            reasons[hit] = reasons[hit] + "; " + label
        rows["reason"] = reasons.str.removeprefix("; ").to_numpy()
        if self._fh is None:
            self._fh = self.path.open("w", newline="")
            rows.to_csv(self._fh, index=False)
        else:
            rows.to_csv(self._fh, index=False, header=False)
        self.count += len(rows)

    def discard(self) -> None:
        """Drop what was collected: the whole file is rejected, so the rows are all in it anyway."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.count = 0

    def close(self) -> Path:
        if self._fh is not None:
            self._fh.close()
        return self.path
