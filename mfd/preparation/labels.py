"""Labels from maintenance records: a record on machine M at time T labels M's readings in [T - window, T]
with its outcome (a failure mode: failure; `no_fault`: no failure). A label that came with a reading wins;
maintenance labels fill the readings that came without one. Each labelled reading has a source: `reading`
or `maintenance`.

A profile without a label column (labels only from records, e.g. machines run to failure) also labels the
readings further than the window before their machine's next record healthy (0): the machine ran on
longer. Readings after a machine's last record have an unknown future: censored, left unlabelled.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, NO_FAULT, PROFILE
from mfd.storage.tables import maintenance_records, readings

SOURCE_COLUMN = "label_source"
# The MLflow run tag of a candidate: the rows of the training set it was built from (retraining compares).
LABELLED_READINGS_TAG = "labelled_readings"
FROM_READING, FROM_MAINTENANCE = "reading", "maintenance"
_CHUNK = 200  # maintenance windows per query


def label_window(text: str | pd.Timedelta) -> pd.Timedelta:
    """The labelling window as a Timedelta (e.g. '2h'); MfdError when it is not a positive duration."""
    try:
        window = pd.Timedelta(text)
    except ValueError as exc:
        raise MfdError(f"label window {text!r} is not a duration; use e.g. '30min', '2h'") from exc
    if window <= pd.Timedelta(0):
        raise MfdError(f"label window must be positive, got {window}")
    return window


def read_maintenance(engine: Engine) -> pd.DataFrame:
    """Every stored maintenance record (machine_id, timestamp UTC, outcome, work_order_id), by time."""
    maintenance_records.create(engine, checkfirst=True)
    columns = [maintenance_records.c[c] for c in ("machine_id", "timestamp", "outcome", "work_order_id")]
    with engine.connect() as conn:
        df = pd.read_sql(sa.select(*columns).order_by(maintenance_records.c.timestamp), conn)
    df = df.rename(columns=str)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    df["machine_id"] = df["machine_id"].astype(str)
    return df


def _windows(maintenance: pd.DataFrame, window: pd.Timedelta) -> Iterator[sa.ColumnElement[bool]]:
    """OR-ed conditions selecting the readings inside the windows, `_CHUNK` records at a time."""
    for start in range(0, len(maintenance), _CHUNK):
        part = maintenance.iloc[start : start + _CHUNK]
        yield sa.or_(
            *(
                sa.and_(
                    readings.c.machine_id == m,
                    readings.c.timestamp.between((t - window).to_pydatetime(), t.to_pydatetime()),
                )
                for m, t in zip(part["machine_id"], part["timestamp"], strict=True)
            )
        )


def _last_record() -> sa.ScalarSelect:
    """The time of the reading's machine's last maintenance record (NULL for a machine without one)."""
    return (
        sa.select(sa.func.max(maintenance_records.c.timestamp))
        .where(maintenance_records.c.machine_id == readings.c.machine_id)
        .scalar_subquery()
    )


def _before_last_record() -> sa.ColumnElement[bool]:
    """Readings at or before their machine's last maintenance record (their future is known)."""
    return readings.c.timestamp <= _last_record()


def count_censored(engine: Engine) -> int:
    """Unlabelled readings whose future is unknown: after their machine's last maintenance record, or of a
    machine without one. They are left out of the training set (neither positive nor negative)."""
    maintenance_records.create(engine, checkfirst=True)
    last = _last_record()
    query = (
        sa.select(sa.func.count())
        .select_from(readings)
        .where(readings.c[LABEL_COLUMN].is_(None), sa.or_(last.is_(None), readings.c.timestamp > last))
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar())


def labelled_filter(maintenance: pd.DataFrame, window: pd.Timedelta) -> Iterator[sa.ColumnElement[bool]]:
    """WHERE clauses whose union is the readings a training set uses: labelled, or in a window (for a
    profile whose labels come only from records: every reading before its machine's last record)."""
    yield readings.c[LABEL_COLUMN].is_not(None)
    if not PROFILE.label_column:
        yield sa.and_(readings.c[LABEL_COLUMN].is_(None), _before_last_record())
        return
    for condition in _windows(maintenance, window):
        yield sa.and_(readings.c[LABEL_COLUMN].is_(None), condition)


def read_labelled_readings(engine: Engine, maintenance: pd.DataFrame, window: pd.Timedelta) -> pd.DataFrame:
    """Readings (without `source`) that carry a label or lie in a maintenance window, in id order."""
    columns = [c for c in readings.columns if c.name != "source"]
    frames = []
    with engine.connect() as conn:
        for where in labelled_filter(maintenance, window):
            frames.append(pd.read_sql(sa.select(*columns).where(where), conn))
    frames = [f for f in frames if len(f)] or frames[:1]  # an empty frame's all-NA columns lose their dtype
    df = pd.concat(frames, ignore_index=True).rename(columns=str) if frames else pd.DataFrame()
    return df.drop_duplicates("id").sort_values("id").reset_index(drop=True)


def count_labelled(engine: Engine, window: pd.Timedelta) -> int:
    """How many readings a training set built now would hold (labelled, or inside a maintenance window)."""
    maintenance = read_maintenance(engine)
    with engine.connect() as conn:
        total = 0
        seen: set[int] = set()
        for i, where in enumerate(labelled_filter(maintenance, window)):
            if i == 0:
                total += int(
                    conn.execute(sa.select(sa.func.count()).select_from(readings).where(where)).scalar()
                )
            else:
                seen.update(conn.execute(sa.select(readings.c.id).where(where)).scalars())
    return total + len(seen)


def apply_maintenance_labels(
    readings_df: pd.DataFrame, maintenance: pd.DataFrame, window: pd.Timedelta
) -> pd.DataFrame:
    """`readings_df` with labels from the next maintenance record of the same machine no more than `window`
    after each reading (where it had none) and a `label_source` column; readings left without a label are
    dropped. Row order is kept."""
    df = readings_df.copy()
    for column in FAILURE_MODE_COLUMNS:
        if column not in df.columns:
            df[column] = pd.NA
    df[LABEL_COLUMN] = df[LABEL_COLUMN].astype("Int8")
    df[SOURCE_COLUMN] = pd.Series(FROM_READING, index=df.index, dtype="object").where(
        df[LABEL_COLUMN].notna()
    )
    unlabelled = df[LABEL_COLUMN].isna()
    if unlabelled.any() and len(maintenance):
        left = df.loc[unlabelled, ["machine_id", "timestamp"]].copy()
        left["machine_id"] = left["machine_id"].astype(str)
        left["timestamp"] = pd.to_datetime(left["timestamp"], utc=True).astype("datetime64[ns, UTC]")
        left["_row"] = left.index
        right = maintenance[["machine_id", "timestamp", "outcome"]].rename(columns={"timestamp": "_at"})
        right = right.assign(timestamp=right["_at"])
        matched = pd.merge_asof(
            left.sort_values("timestamp"),
            right.sort_values("timestamp"),
            on="timestamp",
            by="machine_id",
            direction="forward",
            tolerance=None if not PROFILE.label_column else window,
        ).dropna(subset=["outcome"])
        # Records-only profiles: a reading further than the window before the next record ran on healthy.
        ahead = (matched["_at"] - matched["timestamp"]) > window
        matched.loc[ahead, "outcome"] = NO_FAULT
        rows = matched["_row"].to_numpy()
        outcome = matched["outcome"].to_numpy()
        df.loc[rows, LABEL_COLUMN] = (outcome != NO_FAULT).astype("int8")
        for column in FAILURE_MODE_COLUMNS:
            df.loc[rows, column] = (outcome == column).astype("int8")
        df.loc[rows, SOURCE_COLUMN] = FROM_MAINTENANCE
    df = df.astype({c: "Int8" for c in (LABEL_COLUMN, *FAILURE_MODE_COLUMNS)})
    return df[df[LABEL_COLUMN].notna()]


def readings_per_machine(engine: Engine) -> pd.Series:
    """Stored readings per machine id."""
    query = sa.select(readings.c.machine_id, sa.func.count()).group_by(readings.c.machine_id)
    with engine.connect() as conn:
        counts = dict(conn.execute(query).all())
    return pd.Series(counts, dtype="int64", name="readings").rename_axis("machine_id")


def coverage_by_machine(labelled: pd.DataFrame, stored: pd.Series) -> pd.DataFrame:
    """Per machine: readings stored, labelled per source, failures, and the labelled share."""
    counts = (
        labelled.groupby([labelled["machine_id"].astype(str), SOURCE_COLUMN]).size().unstack(fill_value=0)
        if len(labelled)
        else pd.DataFrame()
    )
    table = pd.DataFrame(index=stored.index.astype(str))
    table["readings"] = stored.to_numpy()
    for source in (FROM_READING, FROM_MAINTENANCE):
        column = counts[source] if source in counts.columns else pd.Series(dtype="int64")
        table[f"labelled_{source}"] = column.reindex(table.index, fill_value=0).astype("int64")
    failures = (
        labelled.groupby(labelled["machine_id"].astype(str))[LABEL_COLUMN].sum() if len(labelled) else None
    )
    table["failures"] = (
        failures.reindex(table.index, fill_value=0).astype("int64") if failures is not None else 0
    )
    labelled_total = table["labelled_reading"] + table["labelled_maintenance"]
    table["coverage"] = (labelled_total / table["readings"].where(table["readings"] > 0)).fillna(0.0).round(4)
    return table.rename_axis("machine_id").sort_index()


def coverage_by_source(labelled: pd.DataFrame) -> pd.DataFrame:
    """Per label source: labelled readings, failures, and the failure rate."""
    grouped = labelled.groupby(SOURCE_COLUMN)[LABEL_COLUMN]
    table = pd.DataFrame({"rows": grouped.size(), "failures": grouped.sum().astype("int64")})
    table = table.reindex([FROM_READING, FROM_MAINTENANCE], fill_value=0)
    table["failure_rate"] = (table["failures"] / table["rows"].where(table["rows"] > 0)).fillna(0.0).round(4)
    return table.rename_axis("source")
