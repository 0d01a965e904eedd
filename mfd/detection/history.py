"""What a batch needs of its machines' earlier readings to compute their machine-window features
(`mfd.windows`), read in one query: per machine, the first `baseline` and the last `max(windows) - 1` readings
of its current life before the batch (the readings after its last maintenance record before the batch's
first reading of it), and how many readings that life had; never a whole history.

The batch's features are then exactly what the batch form computes over each machine's whole history
(`WindowState.from_history`, tests/detection/test_feature_routes.py)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.features import WINDOW_COLUMNS, WINDOW_SPEC, add_windows
from mfd.profiles import MACHINE, TIMESTAMP
from mfd.storage.tables import maintenance_records, readings
from mfd.windows import WindowSpec, WindowState, machine_time_order

_EPOCH = datetime(1900, 1, 1, tzinfo=UTC)  # a life start before any reading
_BOUNDS = sa.Table(
    "mfd_window_bounds",
    sa.MetaData(),
    sa.Column("machine_id", sa.String(64), primary_key=True),
    sa.Column("life_start", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
    prefixes=["TEMPORARY"],
)


def read_resets(engine: Engine, machines: Sequence[str]) -> pd.DataFrame:
    """The maintenance records (machine_id, timestamp UTC) of `machines`: each starts a new life."""
    maintenance_records.create(engine, checkfirst=True)
    query = sa.select(maintenance_records.c.machine_id, maintenance_records.c.timestamp).where(
        maintenance_records.c.machine_id.in_(sa.bindparam("m", expanding=True))
    )
    with engine.connect() as conn:
        df = pd.read_sql(query, conn, params={"m": list(machines)}).rename(columns=str)
    df[TIMESTAMP] = pd.to_datetime(df[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    return df.astype({MACHINE: str})


def _bounds(batch: pd.DataFrame, resets: pd.DataFrame) -> pd.DataFrame:
    """Per machine of the batch: its first reading's time and its current life's start (its last reset
    strictly before that reading; _EPOCH where none)."""
    first = batch.groupby(MACHINE, sort=False)[TIMESTAMP].min().rename("first_seen").reset_index()
    first[MACHINE] = first[MACHINE].astype(str)
    start = pd.Series(pd.Timestamp(_EPOCH), index=first.index)
    if len(resets):
        before = resets.merge(first, on=MACHINE)
        before = before[before[TIMESTAMP] < before["first_seen"]]
        last = before.groupby(MACHINE)[TIMESTAMP].max()
        start = first[MACHINE].map(last).fillna(pd.Timestamp(_EPOCH))
    return first.assign(life_start=start)


def _history_query(columns: Sequence[str], spec: WindowSpec) -> sa.Select:
    """The readings before the batch in each machine's current life, numbered in time order, with the life's
    count before the batch; only the first `baseline` and the last `history` of them. The numbering sorts
    only (id, machine, time); the columns are read for the chosen ids."""
    r, b = readings, _BOUNDS
    numbered = (
        sa.select(
            r.c.id,
            sa.func.row_number()
            .over(partition_by=r.c.machine_id, order_by=(r.c.timestamp, r.c.id))
            .label("ahead"),
            sa.func.count().over(partition_by=r.c.machine_id).label("before"),
        )
        .join(b, b.c.machine_id == r.c.machine_id)
        .where(
            r.c.id < sa.bindparam("first_id"),
            r.c.timestamp > b.c.life_start,
            r.c.timestamp < b.c.first_seen,
        )
        .subquery()
    )
    n = numbered.c
    return (
        sa.select(*(r.c[c] for c in columns), n.before)
        .join(numbered, n.id == r.c.id)
        .where((n.ahead <= spec.baseline) | (n.ahead > n.before - spec.history))
    )


def read_history(
    engine: Engine, batch: pd.DataFrame, first_id: int, resets: pd.DataFrame, columns: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The readings of the batch's machines a window of the batch can reach (`columns`, by time) and, per
    machine, how many readings its current life had before the batch. One query (the machines' bounds go
    in a temporary table of the same connection)."""
    spec = WINDOW_SPEC
    bounds = _bounds(batch, resets)
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # the numbering's sort in memory (this transaction only)
            conn.exec_driver_sql("SET LOCAL work_mem = '64MB'")
        _BOUNDS.drop(conn, checkfirst=True)
        _BOUNDS.create(conn)
        conn.execute(
            _BOUNDS.insert(),
            [
                {"machine_id": m, "life_start": s.to_pydatetime(), "first_seen": f.to_pydatetime()}
                for m, s, f in zip(bounds[MACHINE], bounds["life_start"], bounds["first_seen"], strict=True)
            ],
        )
        history = pd.read_sql(_history_query(columns, spec), conn, params={"first_id": int(first_id)})
        _BOUNDS.drop(conn)
    history = history.rename(columns=str)
    before = history.groupby(MACHINE)["before"].max().astype(int).to_dict() if len(history) else {}
    history[TIMESTAMP] = pd.to_datetime(history[TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    history[MACHINE] = history[MACHINE].astype(str)
    return history.drop(columns=["before"]).sort_values([MACHINE, TIMESTAMP]), before


def in_window_order(batch: pd.DataFrame) -> pd.DataFrame:
    """`batch` in the order its window features are computed (`mfd.windows.machine_time_order`: by machine,
    then time), so none of its ~300 feature columns is reordered; unchanged where the profile declares no
    windows. For a caller that does not need the rows in their own order (detection: each row carries its
    id)."""
    if WINDOW_SPEC is None or batch.empty:
        return batch
    return batch.take(machine_time_order(batch))


def with_window_features(engine: Engine, batch: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """`batch` (readings with id >= first_id) with the profile's window features computed over each
    machine's current life: its stored readings before the batch (ingestion stored only valid ones), then
    the batch's. Unchanged where the profile declares no windows."""
    if WINDOW_SPEC is None or batch.empty:
        return add_windows(batch)
    machines = batch[MACHINE].astype(str).unique().tolist()
    resets = read_resets(engine, machines)
    columns = [MACHINE, TIMESTAMP, *WINDOW_SPEC.sensors]
    history, before = read_history(engine, batch, first_id, resets, ["id", *columns])
    state = WindowState.from_history(WINDOW_SPEC, history[columns], before)
    features = state.update(batch[columns], resets, hold=False)
    # The batch's columns inserted before the features' block, which stays as computed: pd.concat would
    # consolidate it with the sensors into one copied block (~0.4 s of CPU per 100k readings x 289 features).
    for at, column in enumerate(batch.columns.drop(list(WINDOW_COLUMNS), errors="ignore")):
        features.insert(at, column, batch[column])
    return features
