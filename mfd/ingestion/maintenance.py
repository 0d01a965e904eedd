"""Maintenance records: CSV files under `incoming/maintenance/` (machine_id, timestamp, outcome,
work_order_id) checked against the rule table, stored in `maintenance_records`, filed like readings.

The key columns keep the readings' rules (`mfd.validation.READING_RULES`: machine id length, the plausible
timestamp window, so no record from the future); `outcome` is a failure mode or `no_fault`. A record is
also refused when its machine has no stored reading (an unknown machine), or its work order repeats one in
the file or one stored before. Refused rows go to `rejected/<name>@<etag>.csv.bad_rows.csv` with their line
and reason; the good rows of the same file are stored, and the file is filed under `processed/`. A file
that is not a maintenance CSV at all (no header, a required column missing) goes to `rejected/` whole, the
reason beside it.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.schema import FAILURE_OUTCOMES, MAINTENANCE_COLUMNS, NO_FAULT
from mfd.storage.bulk import BulkWriter
from mfd.storage.objects import INCOMING, PROCESSED, REJECTED, Objects, archive_key
from mfd.storage.tables import maintenance_records, readings
from mfd.validation import READING_RULES, Rule, TimestampWindow

MAINTENANCE_PREFIX = f"{INCOMING}maintenance/"
OUTCOMES: tuple[str, ...] = (*FAILURE_OUTCOMES, NO_FAULT)  # the profile's failure modes, or `failure`
# The rule table of a maintenance record: the readings' key rules, plus the outcome and the work order.
MAINTENANCE_RULES: dict[str, Rule] = {
    "machine_id": READING_RULES["machine_id"],
    "timestamp": READING_RULES["timestamp"],
    "outcome": Rule("category", allowed=OUTCOMES),
    "work_order_id": Rule("text", max_length=64),
}


def is_maintenance(key: str) -> bool:
    return key.startswith(MAINTENANCE_PREFIX)


@dataclass
class MaintenanceReport:
    """What one file gave: rows read, stored, refused (with the count per reason), and where it was filed."""

    key: str
    status: str = "processed"  # or rejected (the whole file)
    rows_read: int = 0
    stored: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    filed_as: str = ""
    bad_rows_key: str | None = None
    reason: dict[str, Any] | None = None

    @property
    def rows_refused(self) -> int:
        return sum(self.refused.values())


def _first_reason(reasons: pd.Series, mask: pd.Series, text: str | pd.Series) -> pd.Series:
    return reasons.mask(reasons.isna() & mask.fillna(False).to_numpy(dtype=bool), text)


def refusal_reasons(
    records: pd.DataFrame, known_machines: set[str], stored_orders: set[str], window: TimestampWindow
) -> pd.Series:
    """Why each record (text columns as read) is refused, NA where it is good: the first failed rule of
    MAINTENANCE_RULES, then an unknown machine, then a repeated work order (in the file or stored)."""
    reasons = pd.Series(pd.NA, index=records.index, dtype="object")
    for column, rule in MAINTENANCE_RULES.items():
        values = records[column].str.strip()
        reasons = _first_reason(reasons, values.isna() | (values == ""), f"{column} missing")
        if rule.max_length is not None:
            too_long = values.str.len() > rule.max_length
            reasons = _first_reason(reasons, too_long, f"{column} longer than {rule.max_length}")
        if rule.kind == "category":
            reasons = _first_reason(
                reasons, ~values.isin(rule.allowed), f"{column} not {'/'.join(rule.allowed)}"
            )
        if rule.kind == "timestamp":
            times = parse_times(values)
            reasons = _first_reason(reasons, times.isna(), f"{column} is not a time")
            low, high = window.bounds()
            outside = times.notna() & ((times < low) | (times > high))
            reasons = _first_reason(reasons, outside, f"{column} {window.describe()}")
    machines = records["machine_id"].str.strip()
    reasons = _first_reason(reasons, ~machines.isin(known_machines), "unknown machine: no stored readings")
    orders = records["work_order_id"].str.strip()
    reasons = _first_reason(reasons, orders.isin(stored_orders), "work_order_id stored before")
    repeated = orders.duplicated(keep="first") & reasons.isna()
    lines = pd.Series(records.index, index=records.index)
    first_line = lines.groupby(orders.fillna("")).transform("min")
    return reasons.mask(repeated, "work_order_id repeats line " + first_line.astype(str))


def parse_times(values: pd.Series) -> pd.Series:
    """ISO 8601 times as UTC (a time without an offset is UTC); NaT where a value is not a time."""
    return pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")


def known_machines(engine: Engine, machine_ids: set[str]) -> set[str]:
    """Those of `machine_ids` that have a stored reading."""
    if not machine_ids:
        return set()
    query = sa.select(readings.c.machine_id).where(readings.c.machine_id.in_(sorted(machine_ids))).distinct()
    with engine.connect() as conn:
        return set(conn.execute(query).scalars())


def stored_orders(engine: Engine, orders: set[str]) -> set[str]:
    """Those of `orders` already in `maintenance_records`."""
    if not orders:
        return set()
    column = maintenance_records.c.work_order_id
    with engine.connect() as conn:
        return set(conn.execute(sa.select(column).where(column.in_(sorted(orders)))).scalars())


class NotMaintenanceFile(ValueError):
    """The whole file is unusable as maintenance records."""


def read_records(data: bytes) -> pd.DataFrame:
    """The records of a CSV file as text, indexed by physical line (1 = header); NotMaintenanceFile when
    it is empty, not UTF-8 or lacks a required column."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise NotMaintenanceFile(f"not UTF-8 text: {exc}") from exc
    if not text.strip():
        raise NotMaintenanceFile("empty file: no header")
    try:
        records = pd.read_csv(io.StringIO(text), dtype="string", keep_default_na=False, skip_blank_lines=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise NotMaintenanceFile(f"not CSV: {exc}") from exc
    records.columns = [str(c).strip() for c in records.columns]
    missing = [c for c in MAINTENANCE_COLUMNS if c not in records.columns]
    if missing:
        raise NotMaintenanceFile(
            f"missing column(s) {', '.join(missing)}; expected {', '.join(MAINTENANCE_COLUMNS)}"
        )
    records = records[list(MAINTENANCE_COLUMNS)].replace("", pd.NA)
    records.index = pd.RangeIndex(2, len(records) + 2, name="line")
    return records


def store_records(engine: Engine, records: pd.DataFrame, source: str) -> int:
    """Insert good records (text as read) into `maintenance_records`; a repeated work order is skipped."""
    rows = pd.DataFrame(
        {
            "work_order_id": records["work_order_id"].str.strip().astype(str),
            "machine_id": records["machine_id"].str.strip().astype(str),
            "timestamp": parse_times(records["timestamp"].str.strip()),
            "outcome": records["outcome"].str.strip().astype(str),
        }
    )
    if rows.empty:
        return 0
    with engine.begin() as conn:
        writer = BulkWriter(
            conn,
            maintenance_records,
            tuple(rows.columns),
            conflict=("work_order_id",),
            constants={"source": source},
        )
        return writer.write_frame(rows)


def ingest_maintenance(
    engine: Engine, objects: Objects, key: str, window: TimestampWindow
) -> MaintenanceReport:
    """Check, store and file one maintenance CSV under `incoming/maintenance/` (see the module doc)."""
    maintenance_records.create(engine, checkfirst=True)
    report = MaintenanceReport(key)
    fh, etag = objects.open_version(key)
    with fh:
        data = fh.read()
    beside = archive_key(key, REJECTED, etag)
    try:
        records = read_records(data)
    except NotMaintenanceFile as exc:
        report.status, report.reason = (
            "rejected",
            {"key": key, "rule": "not_maintenance", "message": str(exc)},
        )
        objects.put(f"{beside}.reason.json", json.dumps(report.reason, indent=2).encode())
        objects.move(key, beside, etag)
        report.filed_as = beside
        return report
    report.rows_read = len(records)
    window = window.pinned()
    machines = known_machines(engine, set(records["machine_id"].dropna().str.strip()))
    orders = stored_orders(engine, set(records["work_order_id"].dropna().str.strip()))
    reasons = refusal_reasons(records, machines, orders, window)
    good = records[reasons.isna()]
    report.stored = store_records(engine, good, key)
    refused = records[reasons.notna()].assign(reason=reasons.dropna())
    report.refused = refused["reason"].value_counts().to_dict()
    if len(refused):
        report.bad_rows_key = f"{beside}.bad_rows.csv"
        objects.put(report.bad_rows_key, refused.reset_index().to_csv(index=False).encode())
    report.filed_as = archive_key(key, PROCESSED, etag)
    objects.move(key, report.filed_as, etag)
    return report


def pending_files(objects: Objects) -> list[str]:
    """Keys of the maintenance files waiting under `incoming/maintenance/`, oldest first."""
    listing = sorted(objects.list(MAINTENANCE_PREFIX), key=lambda o: (o.last_modified, o.key))
    return [o.key for o in listing if not o.key.endswith("/")]
