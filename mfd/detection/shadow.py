"""The shadow challenger: while a `challenger` alias points at another version than `champion`, every
prediction batch also scores its validated readings with it into `shadow_predictions` (one row per
reading and model version), in the champion's pass: read and validated once, written in the same
transaction (`mfd.detection.batches.score_batch`). Shadow rows never create failure events; only the
champion's predictions do. The promotion gate reads them back as evidence (`mfd.registry.shadow_evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
import sqlalchemy as sa
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mfd.alerts.costs import DecisionPolicy
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


@dataclass(frozen=True)
class Challenger:
    """A model version scored beside the champion, labelled at its own thresholds per machine type."""

    model: FailureModel
    policy: DecisionPolicy


def load_challenger(client: MlflowClient, name: str) -> Challenger | None:
    """The challenger (digests checked) and its thresholds when there is one to shadow, else None."""
    version = challenger_version(client, name)
    if version is None:
        return None
    model = load_model_version(client, name, version)
    return Challenger(model, challenger_policy(client, name, model))


@dataclass(frozen=True)
class ShadowResult:
    """What the challenger scored in one batch; `error` says why it scored nothing (empty: it scored)."""

    model_name: str
    model_version: str
    rows_scored: int
    alerts: int
    error: str = ""


def shadow_rows(challenger: Challenger, valid: pd.DataFrame, threads: int = 1) -> pd.DataFrame:
    """Shadow rows (reading_id, probability, label) of readings that passed validation, labelled at the
    challenger's threshold for each machine type; rows in chunks over `threads`."""
    model = challenger.model
    probability = model.probability_of_valid(valid, threads)
    threshold = challenger.policy.threshold_for(valid["machine_type"])
    return pd.DataFrame(
        {
            "reading_id": valid["id"].to_numpy(),
            "probability": probability,
            "label": (probability >= threshold).astype("int8"),
        }
    )


def write_shadow(conn: sa.Connection, model: FailureModel, rows: pd.DataFrame) -> ShadowResult:
    """Upsert shadow rows keyed by (reading_id, model_version) on `conn`'s transaction: a re-run writes
    the same rows once."""
    BulkWriter(
        conn,
        shadow_predictions,
        ("reading_id", "probability", "label"),
        conflict=("reading_id", "model_version"),
        update=("model_name", "probability", "label", "scored_at"),
        constants={"model_name": model.name, "model_version": model.version, "scored_at": datetime.now(UTC)},
    ).write_frame(rows)
    return ShadowResult(model.name, model.version, len(rows), int(rows["label"].sum()))
