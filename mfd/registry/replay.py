"""Replay before promotion: the last N days of stored readings re-scored by the challenger and the
champion, compared the way an operator lives with them.

Definitions (one `horizon`, by default the label window):
- an *alert* is a reading the model labels a failure (probability >= its threshold);
- a *labelled failure* is a run of failure-labelled readings of one machine (their own label, or a
  maintenance record's) with gaps of at most `horizon`; it happens at its last reading;
- a failure is *caught* when its machine alerted within `horizon` before it (inclusive); its *lead time*
  is from the earliest such alert to the failure;
- a *false alarm* is an alert that is not within `horizon` before a labelled failure of its machine;
- *alerts per machine-day*: alerts over the (machine, UTC day) pairs that have readings.

Beside them, the early-warning figures of `mfd.modeling.early_warning` at each model's operating threshold
(the profile's horizon, lead and debounce): `lead_share_warned` and `lead_false_alarms_per_machine_day`;
where machines run to failure, `not_worse` also requires the challenger to warn no smaller share in time at
no more false alarms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from sqlalchemy.engine import Engine

from mfd.modeling.early_warning import FALSE_ALARMS, SHARE_WARNED, figures, lead_of, lead_verdict
from mfd.modeling.model_io import FailureModel
from mfd.modeling.tree_predictor import scoring_threads
from mfd.preparation.labels import apply_maintenance_labels, read_maintenance
from mfd.schema import LABEL_COLUMN, PROFILE, SENSOR_COLUMNS
from mfd.storage.copy import copy_frame
from mfd.storage.tables import readings

REPLAY_COLUMNS: tuple[str, ...] = (
    "id",
    "machine_id",
    "timestamp",
    "machine_type",
    *SENSOR_COLUMNS,
    LABEL_COLUMN,
)
FIGURES: tuple[str, ...] = (
    "alerts",
    "alerts_per_machine_day",
    "failures",
    "caught",
    "median_lead_min",
    "false_alarms",
)
LEAD_FIGURES: tuple[str, ...] = (SHARE_WARNED, FALSE_ALARMS)


def read_recent_days(engine: Engine, days: float) -> pd.DataFrame:
    """Readings of the last `days` before the newest stored reading (PostgreSQL: one COPY TO)."""
    with engine.connect() as conn:
        newest = conn.execute(sa.select(sa.func.max(readings.c.timestamp))).scalar()
    if newest is None:  # typed, so the figures of an empty store are zeros, not a dtype error
        empty = pd.DataFrame(columns=list(REPLAY_COLUMNS))
        return empty.astype({"timestamp": "datetime64[ns, UTC]", LABEL_COLUMN: "Int8"})
    since = (
        pd.Timestamp(newest).tz_localize("UTC")
        if pd.Timestamp(newest).tzinfo is None
        else pd.Timestamp(newest)
    )
    since = since - pd.Timedelta(days=days)
    recent = readings.c.timestamp >= since.to_pydatetime()
    if engine.dialect.name == "postgresql":
        return copy_frame(engine, readings, REPLAY_COLUMNS, recent)
    query = sa.select(*(readings.c[c] for c in REPLAY_COLUMNS)).where(recent)
    with engine.connect() as conn:
        df = pd.read_sql(query, conn).rename(columns=str)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df.astype({c: "float64" for c in SENSOR_COLUMNS})


def labelled_failures(frame: pd.DataFrame, horizon: pd.Timedelta) -> pd.DataFrame:
    """The labelled failures of `frame` (machine_id, timestamp, label; labelled rows only count): per
    machine, failure readings no more than `horizon` apart are one failure, at the last one's time."""
    failed = frame.loc[frame[LABEL_COLUMN].fillna(0).astype(bool), ["machine_id", "timestamp"]]
    failed = failed.sort_values(["machine_id", "timestamp"])
    new = (failed["machine_id"] != failed["machine_id"].shift()) | (failed["timestamp"].diff() > horizon)
    episode = new.cumsum()
    out = failed.groupby(episode).agg(machine_id=("machine_id", "first"), timestamp=("timestamp", "max"))
    return out.reset_index(drop=True)


def replay_figures(frame: pd.DataFrame, alert: np.ndarray, horizon: pd.Timedelta) -> dict[str, float]:
    """The figures of one model on `frame` (machine_id, timestamp, label) given its `alert` per row."""
    alert = np.asarray(alert, dtype=bool)
    machine_days = frame.groupby([frame["machine_id"], frame["timestamp"].dt.floor("D")]).ngroups
    failures = labelled_failures(frame, horizon).rename(columns={"timestamp": "failed_at"})
    alerts = frame.loc[alert, ["machine_id", "timestamp"]].rename(columns={"timestamp": "alerted_at"})
    alerts = alerts.astype({"machine_id": str}).sort_values("alerted_at")
    failures = failures.astype({"machine_id": str})
    # each failure: the earliest alert of its machine at or after `horizon` before it (caught if not after it)
    first = pd.merge_asof(
        failures.assign(window_start=failures["failed_at"] - horizon).sort_values("window_start"),
        alerts,
        left_on="window_start",
        right_on="alerted_at",
        by="machine_id",
        direction="forward",
    )
    caught = first["alerted_at"].notna() & (first["alerted_at"] <= first["failed_at"])
    leads = (first.loc[caught, "failed_at"] - first.loc[caught, "alerted_at"]) / pd.Timedelta(minutes=1)
    # each alert: the next failure of its machine no more than `horizon` later (else a false alarm)
    explained = pd.merge_asof(
        alerts,
        failures.sort_values("failed_at"),
        left_on="alerted_at",
        right_on="failed_at",
        by="machine_id",
        direction="forward",
        tolerance=horizon,
    )["failed_at"].notna()
    return {
        "alerts": int(alert.sum()),
        "alerts_per_machine_day": float(alert.sum() / machine_days) if machine_days else float("nan"),
        "failures": len(failures),
        "caught": int(caught.sum()),
        "median_lead_min": float(leads.median()) if len(leads) else float("nan"),
        "false_alarms": int((~explained).sum()),
    }


@dataclass(frozen=True)
class Replay:
    """Replay figures per model (rows `challenger vN` / `champion vM`), what was replayed, how long it took."""

    table: pd.DataFrame
    readings: int
    days: float
    horizon: pd.Timedelta
    seconds: dict[str, float]

    def not_worse(self, challenger: str, champion: str) -> tuple[bool, str]:
        """Whether the challenger catches no fewer labelled failures and raises no more false alarms."""
        a, b = self.table.loc[challenger], self.table.loc[champion]
        figures = (
            f"caught {a['caught']:.0f} vs {b['caught']:.0f} of {b['failures']:.0f}, "
            f"false alarms {a['false_alarms']:.0f} vs {b['false_alarms']:.0f} over {self.readings} readings"
        )
        lead = (
            lead_verdict(*(row.to_dict() for row in (a, b)))
            if PROFILE.run_to_failure
            else (True, "lead time reported, not compared (snapshot labels)")
        )
        if a["caught"] >= b["caught"] and a["false_alarms"] <= b["false_alarms"] and lead[0]:
            return True, f"replay not worse: {figures}; {lead[1]}"
        return False, f"replay worse: {figures}; {lead[1]}"


def replay_models(
    engine: Engine, models: dict[str, FailureModel], days: float, horizon: pd.Timedelta
) -> Replay:
    """Re-score the last `days` of stored readings with each of `models` (row name -> model) and compare
    them on the readings' labels and the maintenance labels (records within `horizon`)."""
    t0 = time.perf_counter()
    frame = read_recent_days(engine, days)
    maintenance = read_maintenance(engine)
    unlabelled = frame[LABEL_COLUMN].isna()
    if len(maintenance) and unlabelled.any():
        part = frame.loc[unlabelled, ["machine_id", "timestamp", LABEL_COLUMN]]
        labelled = apply_maintenance_labels(part, maintenance, horizon)
        frame[LABEL_COLUMN] = frame[LABEL_COLUMN].astype("Int8")
        frame.loc[labelled.index, LABEL_COLUMN] = labelled[LABEL_COLUMN]
    t1 = time.perf_counter()
    rows, seconds = {}, {"read": t1 - t0}
    for name, model in models.items():
        start = time.perf_counter()
        # typed columns from the store: MLflow's per-value schema checks would only cost time here
        probability = model.probability_of_valid(frame, scoring_threads())
        alert = probability >= model.threshold
        lead = figures(lead_of(frame, probability, model.threshold))
        rows[name] = replay_figures(frame, alert, horizon) | {k: lead[k] for k in LEAD_FIGURES}
        seconds[name] = time.perf_counter() - start
    table = pd.DataFrame.from_dict(rows, orient="index")[[*FIGURES, *LEAD_FIGURES]]
    return Replay(table, len(frame), days, horizon, seconds)


def logged_model(model_uri: str, name: str, threshold: float) -> FailureModel:
    """A logged, not yet registered model (this run's candidate) loaded for a replay."""
    return FailureModel(name, "candidate", threshold, mlflow.pyfunc.load_model(model_uri))


def replay_figure(replay: Replay) -> Figure:
    """One bar panel per figure, a bar per model."""
    fig, axes = plt.subplots(2, 3, figsize=(12, 6))
    for ax, figure in zip(axes.flat, FIGURES, strict=True):
        values = replay.table[figure].astype("float64")
        ax.bar(
            range(len(values)), values.fillna(0).to_numpy(), color=["tab:orange", "tab:blue"][: len(values)]
        )
        ax.set_xticks(range(len(values)), list(values.index), fontsize=8)
        ax.set_title(figure.replace("_", " "), fontsize=9)
    fig.suptitle(
        f"replay of {replay.readings} readings, last {replay.days:g} days (horizon {replay.horizon})"
    )
    fig.tight_layout()
    return fig
