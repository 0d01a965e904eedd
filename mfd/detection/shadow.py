"""The shadow challenger: while a `challenger` alias points at another version than `champion`, every
prediction batch is also scored by it into `shadow_predictions` (one row per reading and model version).
Shadow rows never create failure events; only the champion's predictions do (`mfd.detection.batches`).

`shadow_evidence` compares the two on the readings both scored: how often they agree, alerts per
machine-day, and PR AUC on the readings that carry a label by now (their own or a maintenance record's).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.metrics import average_precision_score
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits

from mfd.alerts.costs import DecisionPolicy
from mfd.detection.batches import invalid_reasons, read_batch
from mfd.modeling.model_io import CHALLENGER, CHAMPION, FailureModel, load_model_version
from mfd.preparation.labels import apply_maintenance_labels, read_maintenance
from mfd.registry.champion import POLICY_TAGS
from mfd.schema import LABEL_COLUMN
from mfd.storage.bulk import BulkWriter
from mfd.storage.tables import predictions, readings, shadow_predictions


def _alias(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def challenger_version(client: MlflowClient, name: str) -> str | None:
    """The version `challenger` points at, when it is not the champion's (else None: nothing to shadow)."""
    challenger = _alias(client, name, CHALLENGER)
    return challenger if challenger is not None and challenger != _alias(client, name, CHAMPION) else None


def challenger_policy(client: MlflowClient, name: str, model: FailureModel) -> DecisionPolicy:
    """The challenger version's thresholds per machine type (its `thresholds`/`cost_matrix` tags), as the
    champion's are applied in detection; the model's one threshold where the version has none."""
    tags = client.get_model_version(name, model.version).tags
    return DecisionPolicy.from_tags({t: tags[t] for t in POLICY_TAGS if t in tags}, model.threshold)


def load_challenger(client: MlflowClient, name: str) -> FailureModel | None:
    """The challenger model (digests checked) when there is one to shadow, else None."""
    version = challenger_version(client, name)
    return load_model_version(client, name, version) if version is not None else None


@dataclass(frozen=True)
class ShadowResult:
    """What one shadow batch read, scored and wrote, and how long each step took (seconds)."""

    model_version: str
    rows_read: int
    rows_scored: int
    alerts: int
    seconds: dict[str, float]


def score_frame(
    model: FailureModel, batch: pd.DataFrame, policy: DecisionPolicy | None = None
) -> pd.DataFrame:
    """Shadow rows (reading_id, probability, label) of the valid readings of `batch`, labelled at the
    `policy`'s threshold for each machine type (None: the model's one threshold)."""
    valid = batch[invalid_reasons(batch).isna()]
    with threadpool_limits(1):
        probability = model.probability(valid) if len(valid) else np.empty(0)
    threshold = policy.threshold_for(valid["machine_type"]) if policy is not None else model.threshold
    return pd.DataFrame(
        {
            "reading_id": valid["id"].to_numpy(),
            "probability": probability,
            "label": (probability >= threshold).astype("int8"),
        }
    )


def write_shadow(engine: Engine, model: FailureModel, scored: pd.DataFrame) -> int:
    """Upsert shadow rows keyed by (reading_id, model_version): a re-run writes the same rows once."""
    shadow_predictions.create(engine, checkfirst=True)
    with engine.begin() as conn:
        return BulkWriter(
            conn,
            shadow_predictions,
            ("reading_id", "probability", "label"),
            conflict=("reading_id", "model_version"),
            update=("model_name", "probability", "label", "scored_at"),
            constants={
                "model_name": model.name,
                "model_version": model.version,
                "scored_at": datetime.now(UTC),
            },
        ).write_frame(scored)


def score_shadow(
    engine: Engine, model: FailureModel, first_id: int, last_id: int, policy: DecisionPolicy | None = None
) -> ShadowResult:
    """Score the readings with first_id <= id <= last_id with the challenger into `shadow_predictions`."""
    t0 = time.perf_counter()
    batch = read_batch(engine, first_id, last_id)
    t1 = time.perf_counter()
    scored = score_frame(model, batch, policy)
    t2 = time.perf_counter()
    write_shadow(engine, model, scored)
    t3 = time.perf_counter()
    return ShadowResult(
        model.version,
        len(batch),
        len(scored),
        int(scored["label"].sum()),
        {"read": t1 - t0, "score": t2 - t1, "write": t3 - t2},
    )


def _side_by_side(engine: Engine, challenger: str) -> pd.DataFrame:
    """Readings scored by both the champion (`predictions`) and the challenger version (shadow)."""
    shadow_predictions.create(engine, checkfirst=True)
    s, p, r = shadow_predictions.alias("s"), predictions.alias("p"), readings.alias("r")
    query = (
        sa.select(
            r.c.id,
            r.c.machine_id,
            r.c.timestamp,
            r.c[LABEL_COLUMN],
            p.c.model_version.label("champion_version"),
            p.c.probability.label("champion_probability"),
            p.c.label.label("champion_label"),
            s.c.probability.label("challenger_probability"),
            s.c.label.label("challenger_label"),
        )
        .select_from(s.join(p, p.c.reading_id == s.c.reading_id).join(r, r.c.id == s.c.reading_id))
        .where(s.c.model_version == challenger)
        .order_by(r.c.id)
    )
    with engine.connect() as conn:
        df = pd.read_sql(query, conn).rename(columns=str)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def _pr_auc(labels: pd.Series, probability: pd.Series) -> float:
    y = labels.astype("int64")
    return float(average_precision_score(y, probability)) if y.nunique() == 2 else float("nan")


def shadow_evidence(engine: Engine, challenger: str, label_window: pd.Timedelta) -> pd.DataFrame:
    """Champion vs challenger `challenger` on the readings both scored: one row per model with readings,
    agreement, alerts, alerts per machine-day, labelled readings and PR AUC on them (NaN with one class)."""
    both = _side_by_side(engine, challenger)
    labelled = apply_maintenance_labels(both, read_maintenance(engine), label_window)
    machine_days = both.groupby([both["machine_id"], both["timestamp"].dt.floor("D")]).ngroups
    agreement = (
        float((both["champion_label"] == both["challenger_label"]).mean()) if len(both) else float("nan")
    )
    rows = {}
    for role in ("champion", "challenger"):
        alerts = int(both[f"{role}_label"].sum())
        version = challenger if role == "challenger" else ",".join(sorted(both["champion_version"].unique()))
        rows[f"{role} v{version}"] = {
            "readings": len(both),
            "agreement": agreement,
            "alerts": alerts,
            "alerts_per_machine_day": alerts / machine_days if machine_days else float("nan"),
            "labelled_readings": len(labelled),
            "pr_auc_labelled": _pr_auc(labelled[LABEL_COLUMN], labelled[f"{role}_probability"])
            if len(labelled)
            else float("nan"),
        }
    return pd.DataFrame.from_dict(rows, orient="index")
