"""Every registered version gets its thresholds per machine type, its cost matrix and a model card (an
MLflow artifact and the version's description), on a real MLflow server; the gate can compare expected cost."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import unique
from sklearn.model_selection import train_test_split

from mfd.alerts.costs import parse_cost_matrix, thresholds_by_type
from mfd.modeling.candidate import train_candidate
from mfd.modeling.experiment import LoggedCandidate, log_candidate
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry import promotion as registry
from mfd.registry.model_card import CARD_TAG
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer
from mfd.storage import tracking
from mfd_resources import Tracking

pytestmark = pytest.mark.integration

MATRIX = parse_cost_matrix(
    {
        "L": {"missed_failure": 5000, "false_stop": 100, "late_alarm": 1000},
        "M": {"missed_failure": 5000, "false_stop": 2000, "late_alarm": 1000},
        "H": {"missed_failure": 20000, "false_stop": 100, "late_alarm": 1000},
    }
)


@pytest.fixture(scope="module")
def rows() -> tuple[pd.DataFrame, pd.DataFrame]:
    """2,500 AI4I rows to train on and 3,000 others standing in for validation predictions."""
    df = load_ai4i()
    train, rest = train_test_split(df, train_size=2500, stratify=df[LABEL_COLUMN], random_state=3)
    return train.reset_index(drop=True), rest.head(3000).reset_index(drop=True)


@pytest.fixture(scope="module")
def logged(mlflow: MlflowServer, rows) -> dict[str, LoggedCandidate]:
    client = tracking.connect(mlflow.tracking_uri)
    experiment = tracking.experiment_id(client, unique("exp-"))
    out = {}
    for family in ("logreg", "hgb"):
        candidate = train_candidate(rows[0], family=family, folds=2, trials=1, seed=0)
        out[family] = log_candidate(
            candidate,
            experiment_id=experiment,
            settings={"folds": 2},
            tags={"training_set": "ai4i sample", "training_set_version": "abc123"},
        )
    return out


def validation_of(logged: LoggedCandidate, rows: pd.DataFrame) -> pd.DataFrame:
    proba = logged.candidate.pipeline.predict_proba(rows)[:, 1]
    return pd.DataFrame(
        {"y": rows[LABEL_COLUMN].astype(int), "proba": proba, "machine_type": rows["machine_type"]}
    )


def test_every_new_version_gets_thresholds_costs_and_a_card(mlflow: MlflowServer, logged, rows) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    name = unique("model-")
    decisions = []
    for family in ("logreg", "hgb"):
        c = logged[family].candidate
        decisions.append(
            registry.promote_candidate(
                client,
                name,
                logged[family].model_uri,
                c.holdout,
                threshold=c.threshold,
                metric="expected_cost",
                margin=0.0,
                validation=validation_of(logged[family], rows[1]),
                cost_matrix=MATRIX,
            )
        )
    first, second = decisions
    assert set(first.thresholds) == {"L", "M", "H"}
    # M's false stops cost 20x L's: its threshold is at least as high
    assert first.thresholds["M"] >= first.thresholds["L"]
    # lower expected cost wins; the reason quotes both
    assert second.promoted == (
        second.challenger_scores["expected_cost"] < second.champion_scores["expected_cost"]
    )
    assert "expected_cost" in second.reason

    for decision in decisions:
        mv = client.get_model_version(name, decision.challenger)
        assert json.loads(mv.tags[registry.THRESHOLDS_TAG]) == pytest.approx(decision.thresholds, abs=1e-6)
        assert parse_cost_matrix(mv.tags[registry.COST_MATRIX_TAG]) == MATRIX
        assert mv.description == decision.card
        artifact = mv.tags[CARD_TAG]
        assert artifact == f"runs:/{mv.run_id}/model_card/v{mv.version}/model_card.md"
        stored = client.download_artifacts(mv.run_id, f"model_card/v{mv.version}/model_card.md")
        with open(stored) as f:
            assert f.read() == decision.card

    card = second.card
    for text in (
        f"# Model card: {name} version 2",
        "training set: ai4i sample (version abc123)",
        "## Holdout metrics",
        "## Calibration (holdout)",
        "Brier score",
        "## Costs and thresholds",
        "missed_failure",
        "## Shifted holdouts",
        "leak the label",
        "mislabelled",
    ):
        assert text in card, text
    per_type = card.split("## Holdout metrics")[1].split("## Calibration")[0]
    assert all(f"| {t} " in per_type for t in ("all", "L", "M"))


def test_a_version_that_fails_evaluation_still_gets_a_card(mlflow: MlflowServer, logged) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    name = unique("model-")
    c = logged["hgb"].candidate
    with pytest.raises(Exception, match="torque_nm"):
        registry.promote_candidate(
            client,
            name,
            logged["hgb"].model_uri,
            c.holdout.drop(columns=["torque_nm"]),
            threshold=c.threshold,
        )
    mv = client.get_model_version(name, "1")
    assert "Evaluation on the holdout failed" in mv.description and mv.tags[CARD_TAG]


def test_an_unknown_gate_metric_is_refused(mlflow: MlflowServer, logged) -> None:
    c = logged["hgb"].candidate
    with pytest.raises(Exception, match="choose one of .*expected_cost"):
        registry.promote_candidate(
            tracking.connect(mlflow.tracking_uri),
            unique("m-"),
            logged["hgb"].model_uri,
            c.holdout,
            threshold=c.threshold,
            metric="cost",
        )


def test_the_tracking_resource_takes_thresholds_from_the_candidates_validation_folds(
    mlflow: MlflowServer, logged
) -> None:
    candidate = logged["hgb"].candidate
    assert {"y", "proba", "machine_type"} <= set(candidate.validation.columns)
    resource = Tracking(tracking_uri=mlflow.tracking_uri, model_name=unique("m-"))
    decision = resource.promote(logged["hgb"], metric="pr_auc", margin=0.0, tags={}, cost_matrix=MATRIX)
    expected = thresholds_by_type(candidate.validation, MATRIX)
    assert decision.thresholds == pytest.approx({t: c.threshold for t, c in expected.items()}, abs=1e-6)
    assert "## Costs and thresholds" in decision.card
