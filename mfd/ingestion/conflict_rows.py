"""Rows that conflict with stored ones (same key, other values), spooled to a CSV file beside the rejected/
copy: key, the columns that differ, then per column the stored and the incoming value side by side."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pandas as pd


class ConflictRows:
    """The conflicting rows of one file (policy `reject`), spooled to disk as the bulk writer finds them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def add(self, rows: pd.DataFrame) -> None:
        if self._fh is None:
            self._fh = self.path.open("w", newline="")
            rows.to_csv(self._fh, index=False)
        else:
            rows.to_csv(self._fh, index=False, header=False)
        self.count += len(rows)

    def discard(self) -> None:
        """Drop what was collected: the whole file is rejected, nothing from it was stored."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.count = 0

    def close(self) -> Path:
        if self._fh is not None:
            self._fh.close()
        return self.path
