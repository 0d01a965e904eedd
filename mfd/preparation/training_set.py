"""The training set: labelled readings joined with peripheral data, physics features, machine-window features
(where the profile declares windows: per machine in time order, maintenance records starting a new life; no
window reads a later reading), IQR outlier removal."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import sqlalchemy as sa
from matplotlib.figure import Figure
from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.features import PHYSICS_COLUMNS, WINDOW_COLUMNS, add_physics, add_windows
from mfd.preparation import labels
from mfd.schema import (
    FAILURE_MODE_COLUMNS,
    LABEL_COLUMN,
    MACHINE_TYPES,
    PROFILE,
    REQUIRED_COLUMNS,
    SENSOR_COLUMNS,
)
from mfd.storage import readings as store
from mfd.validation import PERIPHERAL_RANGES

PERIPHERAL_VALUE_COLUMNS: tuple[str, ...] = tuple(PERIPHERAL_RANGES)
# Layout of the training set; `id` is the readings row id (kept when the input has it).
TRAINING_COLUMNS: tuple[str, ...] = (
    "id",
    *REQUIRED_COLUMNS,
    *PHYSICS_COLUMNS,
    *PERIPHERAL_VALUE_COLUMNS,
    LABEL_COLUMN,
    *FAILURE_MODE_COLUMNS,
    *WINDOW_COLUMNS,
)
# Readings this long before a maintenance record take its outcome: the profile's horizon (AI4I: 2 h).
DEFAULT_LABEL_WINDOW = f"{int(PROFILE.horizon.total_seconds())}s"
# Numeric columns screened for outliers: the sensors and the physics features derived from them.
OUTLIER_COLUMNS: tuple[str, ...] = (*SENSOR_COLUMNS, *PHYSICS_COLUMNS)


def _missing(df: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise MfdError(f"{what} lack column(s) {', '.join(missing)}; expected {', '.join(columns)}")


def _utc(series: pd.Series) -> pd.Series:
    return pd.to_datetime(series, utc=True).astype("datetime64[ns, UTC]")


def read_sources(engine: Engine, label_window: pd.Timedelta | str = DEFAULT_LABEL_WINDOW) -> Sources:
    """The readings a training set can use (labelled, or within `label_window` before a maintenance record
    of their machine; without their `source`), all of `peripheral_readings` and the maintenance records."""
    window = labels.label_window(label_window)
    maintenance = labels.read_maintenance(engine)
    peripheral = sa.select(*(c for c in store.peripheral_readings.columns if c.name not in ("id", "source")))
    with engine.connect() as conn:
        peripheral_df = pd.read_sql(peripheral, conn).rename(columns=str)
    # SQLAlchemy labels columns with `quoted_name`; plain strings keep sklearn's feature names happy.
    return Sources(
        labels.read_labelled_readings(engine, maintenance, window), peripheral_df, maintenance, window
    )


@dataclass(frozen=True)
class Sources:
    """What a training set is built from: candidate readings, peripheral readings, maintenance records."""

    readings: pd.DataFrame
    peripheral: pd.DataFrame
    maintenance: pd.DataFrame
    label_window: pd.Timedelta

    def labelled(self) -> pd.DataFrame:
        """The readings with their own or a maintenance label, and its `label_source`."""
        return labels.apply_maintenance_labels(self.readings, self.maintenance, self.label_window)


def build_training_set(
    readings: pd.DataFrame,
    peripheral: pd.DataFrame,
    tolerance: pd.Timedelta | str,
    resets: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Labelled readings with physics features, the window features (WINDOW_COLUMNS, over each machine's
    readings in `readings`; `resets`: maintenance records, after which a machine starts a new life) and,
    per machine, the nearest earlier peripheral reading no older than `tolerance` (peripheral columns stay
    NaN where there is none). Row order is kept."""
    try:
        tolerance = pd.Timedelta(tolerance)
    except ValueError as exc:
        raise MfdError(f"merge tolerance {tolerance!r} is not a duration; use e.g. '30s' or '5min'") from exc
    if tolerance < pd.Timedelta(0):
        raise MfdError(f"merge tolerance must not be negative, got {tolerance}")
    _missing(readings, (*REQUIRED_COLUMNS, LABEL_COLUMN), "readings")
    _missing(peripheral, ("machine_id", "timestamp", *PERIPHERAL_VALUE_COLUMNS), "peripheral readings")

    left = readings[readings[LABEL_COLUMN].notna()].copy()
    for col in FAILURE_MODE_COLUMNS:
        if col not in left.columns:
            left[col] = pd.NA
    left["machine_id"] = left["machine_id"].astype(str)
    left["timestamp"] = _utc(left["timestamp"])
    if left["timestamp"].isna().any():
        raise MfdError(f"{int(left['timestamp'].isna().sum())} labelled readings have no timestamp; fix them")
    left["_order"] = range(len(left))

    right = peripheral[["machine_id", "timestamp", *PERIPHERAL_VALUE_COLUMNS]].copy()
    right["machine_id"] = right["machine_id"].astype(str)
    right["timestamp"] = _utc(right["timestamp"])
    right = right.dropna(subset=["timestamp"]).astype({c: "float64" for c in PERIPHERAL_VALUE_COLUMNS})

    left = left.drop(columns=[c for c in PERIPHERAL_VALUE_COLUMNS if c in left.columns])
    merged = pd.merge_asof(
        left.sort_values("timestamp"),
        right.sort_values("timestamp"),
        on="timestamp",
        by="machine_id",
        direction="backward",
        tolerance=tolerance,
    )
    out = add_physics(merged.sort_values("_order").reset_index(drop=True))
    out = add_windows(out, resets)
    out["machine_id"] = out["machine_id"].astype("string")
    out["machine_type"] = out["machine_type"].astype("string")
    out = out.astype({c: "float64" for c in SENSOR_COLUMNS})
    out = out.astype({c: "Int8" for c in (LABEL_COLUMN, *FAILURE_MODE_COLUMNS)})
    return out[[c for c in TRAINING_COLUMNS if c in out.columns]]


def rows_with_peripheral(training_set: pd.DataFrame) -> int:
    """Rows that got a peripheral reading in the join (none where the profile has no peripheral devices)."""
    if not PERIPHERAL_VALUE_COLUMNS:
        return 0
    return int(training_set[list(PERIPHERAL_VALUE_COLUMNS)].notna().all(axis=1).sum())


@dataclass(frozen=True)
class OutlierReport:
    """What IQR screening did: `by_feature` has, per feature, the non-failure rows removed and the
    failure rows a naive IQR would have dropped; `bounds` the fences per feature and machine type."""

    rows_before: int
    rows_removed: int
    failures_kept: int
    naive_failures_dropped: int
    by_feature: pd.DataFrame
    bounds: pd.DataFrame

    @property
    def rows_after(self) -> int:
        return self.rows_before - self.rows_removed


def iqr_bounds(df: pd.DataFrame, k: float = 1.5) -> pd.DataFrame:
    """Fences q1 - k*IQR and q3 + k*IQR per machine type and feature (index: machine_type, feature)."""
    rank = {t: i for i, t in enumerate(MACHINE_TYPES)}
    types = sorted(df["machine_type"].dropna().unique(), key=lambda t: (rank.get(t, len(rank)), str(t)))
    rows = []
    for machine_type in types:
        group = df[df["machine_type"] == machine_type]
        for feature in OUTLIER_COLUMNS:
            q1, q3 = group[feature].quantile([0.25, 0.75])
            rows.append((machine_type, feature, q1, q3, q1 - k * (q3 - q1), q3 + k * (q3 - q1)))
    bounds = pd.DataFrame(rows, columns=["machine_type", "feature", "q1", "q3", "low", "high"])
    return bounds.set_index(["machine_type", "feature"])


def remove_outliers_iqr(df: pd.DataFrame, k: float = 1.5) -> tuple[pd.DataFrame, OutlierReport]:
    """Drop non-failure rows outside the IQR fences of any feature (fences per machine type).

    Failures are never removed: they are the rare class and often extreme by nature (PWF, OSF).
    """
    if k <= 0:
        raise MfdError(f"IQR multiplier k must be positive, got {k}")
    _missing(df, ("machine_type", *OUTLIER_COLUMNS, LABEL_COLUMN), "training set")
    bounds = iqr_bounds(df, k)
    low = bounds["low"].unstack("feature").reindex(df["machine_type"]).set_axis(df.index)
    high = bounds["high"].unstack("feature").reindex(df["machine_type"]).set_axis(df.index)
    values = df[list(OUTLIER_COLUMNS)]
    outside = (values < low[list(OUTLIER_COLUMNS)]) | (values > high[list(OUTLIER_COLUMNS)])
    failure = df[LABEL_COLUMN].fillna(0).astype(bool)
    by_feature = pd.DataFrame(
        {
            "removed": outside[~failure].sum(),
            "failures_outside_kept": outside[failure].sum(),
        }
    ).rename_axis("feature")
    drop = outside.any(axis=1) & ~failure
    report = OutlierReport(
        rows_before=len(df),
        rows_removed=int(drop.sum()),
        failures_kept=int(failure.sum()),
        naive_failures_dropped=int((outside.any(axis=1) & failure).sum()),
        by_feature=by_feature.astype("int64"),
        bounds=bounds,
    )
    return df[~drop].reset_index(drop=True), report


def outlier_boxplot(before: pd.DataFrame, after: pd.DataFrame) -> Figure:
    """One panel per screened feature: its distribution before and after outlier removal."""
    columns = 2  # narrow and tall: the UI's metadata modal scrolls, it does not widen
    rows = -(-len(OUTLIER_COLUMNS) // columns)
    fig = Figure(figsize=(4 * columns, 2.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax, feature in zip(axes.flat, OUTLIER_COLUMNS, strict=False):
        ax.boxplot([before[feature].dropna(), after[feature].dropna()], tick_labels=["before", "after"])
        ax.set_title(feature, fontsize=9)
    for ax in list(axes.flat)[len(OUTLIER_COLUMNS) :]:
        ax.set_visible(False)
    fig.suptitle(f"IQR outlier removal: {len(before)} -> {len(after)} rows")
    fig.tight_layout()
    return fig
