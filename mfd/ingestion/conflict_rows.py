"""Rows that conflict with stored ones (same key, other values), spooled to a CSV file beside the rejected/
copy: key, the columns that differ, then per column the stored and the incoming value side by side."""

from __future__ import annotations

from mfd.ingestion.spool import CsvSpool


class ConflictRows(CsvSpool):
    """The conflicting rows of one file (policy `reject`), spooled to disk as the bulk writer finds them."""

    add = CsvSpool.write
