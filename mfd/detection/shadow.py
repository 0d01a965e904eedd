"""The shadow challenger: while a `challenger` alias points at another version than `champion`, every
prediction batch is also scored by it into `shadow_predictions` (one row per reading and model version).
Shadow rows never create failure events; only the champion's predictions do (`mfd.detection.batches`).
The promotion gate reads them back as evidence (`mfd.registry.shadow_evidence`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits

from mfd.alerts.costs import DecisionPolicy
from mfd.detection.batches import invalid_reasons, read_batch, score_valid
from mfd.modeling.model_io import CHALLENGER, CHAMPION, FailureModel, load_model_version
from mfd.registry.champion import POLICY_TAGS
from mfd.storage.bulk import BulkWriter
from mfd.storage.tables import shadow_predictions


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
        probability = score_valid(model, valid)
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
