"""Rows set aside while a file loads (bad rows, conflicts), spooled to a CSV file as they are found, so a
large file never holds them in memory; the file is copied beside the rejected/ copy when the load ends."""

from __future__ import annotations

from pathlib import Path
from typing import IO

import pandas as pd


class CsvSpool:
    """Appends frames to one CSV file (header once) and counts their rows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._fh: IO[str] | None = None

    def write(self, rows: pd.DataFrame) -> None:
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
