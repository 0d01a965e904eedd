"""Conflicts: staged rows whose key is stored already with other values (a corrected file), on PostgreSQL and
SQLite alike.

The bulk writer calls `settle` only after a merge that inserted fewer rows than it staged, so a clean load
never pays for it. Compared are the columns the writer loads, minus the key (a column the file lacks is not
compared); an exact repeat is a duplicate. Policies: `reject` leaves the stored row alone and hands the
conflicting rows, stored and incoming values side by side, to `report`; `replace` copies the stored values
into `reading_revisions` (when, which file replaced them) and updates the row, the last row of a file
winning when it repeats a key.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pandas as pd
import sqlalchemy as sa

from mfd.storage.tables import reading_revisions

Differ = Literal["reject", "replace"]
DIFFER_POLICIES: tuple[str, ...] = ("reject", "replace")


class Conflicts:
    """Finds, counts and settles the conflicting rows of one staging table against `table`."""

    def __init__(
        self,
        conn: sa.Connection,
        table: sa.Table,
        columns: Sequence[str],
        key: Sequence[str],
        constants: Mapping[str, Any],
        differ: Differ,
        report: Callable[[pd.DataFrame], None] | None = None,
    ) -> None:
        if differ not in DIFFER_POLICIES:
            raise ValueError(f"conflict policy must be one of {', '.join(DIFFER_POLICIES)}, got {differ!r}")
        self.conn, self.table, self.differ, self.report = conn, table, differ, report
        self.key, self.constants = tuple(key), dict(constants)
        self.compared = tuple(c for c in columns if c not in self.key)
        self.count = 0

    def settle(self, staging: str) -> None:
        """Count the staged rows that differ from their stored twin, then reject or replace them."""
        if not self.compared:
            return
        on = " AND ".join(f"t.{_q(c)} = s.{_q(c)}" for c in self.key)
        differs = " OR ".join(f"s.{_q(c)} IS DISTINCT FROM t.{_q(c)}" for c in self.compared)
        picks = [
            *(f"s.{_q(c)} AS {_q(c)}" for c in self.key),
            "t.id AS stored_id",
            *(f"t.{_q(c)} AS {_q('stored_' + c)}" for c in self.constants),
            *(f"t.{_q(c)} AS {_q(c + '_stored')}, s.{_q(c)} AS {_q(c + '_incoming')}" for c in self.compared),
        ]
        found = self.conn.execute(
            sa.text(
                f"SELECT {', '.join(picks)} FROM {staging} s JOIN {self.table.name} t ON {on} "
                f"WHERE {differs} ORDER BY s.mfd_row"
            )
        )
        records = [dict(row._mapping) for row in found]
        if not records:
            return
        self.count += len(records)
        if self.differ == "replace":
            self._replace(staging, records, on, differs)
        elif self.report is not None:
            self.report(self._side_by_side(records))

    def _side_by_side(self, records: list[dict[str, Any]]) -> pd.DataFrame:
        frame = pd.DataFrame.from_records(records).drop(columns="stored_id")
        frame.insert(
            len(self.key),
            "differs",
            [
                "; ".join(c for c in self.compared if not _same(r[f"{c}_stored"], r[f"{c}_incoming"]))
                for r in records
            ],
        )
        return frame

    def _replace(self, staging: str, records: list[dict[str, Any]], on: str, differs: str) -> None:
        now, seen = datetime.now(UTC), set()
        revisions = []
        for r in records:
            if r["stored_id"] in seen:  # a key repeated in the file: the stored values are logged once
                continue
            seen.add(r["stored_id"])
            old = {c: _plain(r[f"{c}_stored"]) for c in self.compared}
            revisions.append(
                {
                    "table_name": self.table.name,
                    "reading_id": r["stored_id"],
                    "machine_id": r["machine_id"],
                    "timestamp": _utc(r["timestamp"]),
                    "old_values": json.dumps(old, default=str),
                    "old_source": r.get("stored_source"),
                    "revised_by": self.constants.get("source"),
                    "revised_at": now,
                }
            )
        self.conn.execute(reading_revisions.insert(), revisions)
        keys = ", ".join(f"s.{_q(c)}" for c in self.key)
        latest = (
            f"SELECT * FROM (SELECT s.*, row_number() OVER (PARTITION BY {keys} ORDER BY s.mfd_row DESC) "
            f"AS mfd_rank FROM {staging} s) ranked WHERE mfd_rank = 1"
        )
        sets = [f"{_q(c)} = s.{_q(c)}" for c in self.compared]
        sets += [f"{_q(c)} = :constant{i}" for i, c in enumerate(self.constants)]
        self.conn.execute(
            sa.text(
                f"UPDATE {self.table.name} AS t SET {', '.join(sets)} FROM ({latest}) AS s WHERE {on} AND ({differs})"
            ),
            {f"constant{i}": v for i, v in enumerate(self.constants.values())},
        )


def _q(column: str) -> str:
    return f'"{column}"'


def _plain(value: Any) -> Any:
    return None if isinstance(value, float) and math.isnan(value) else value


def _same(a: Any, b: Any) -> bool:
    a, b = _plain(a), _plain(b)
    return a is None and b is None or (a is not None and b is not None and a == b)


def _utc(value: Any) -> datetime:
    """A key timestamp as PostgreSQL (datetime) or SQLite (text) returns it, as an aware UTC datetime."""
    ts = pd.Timestamp(value)
    return (ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)).to_pydatetime()
