"""The training assets in Dagster against the real MLflow server: the shared holdout, candidate, gated
champion, the blocking trainability check, and the rollback job."""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from conftest import unique
from sklearn.model_selection import train_test_split

from mfd.modeling.holdout import without_holdout
from mfd.modeling.model_io import CHAMPION
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry import promotion as registry
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer
from mfd_assets.jobs import rollback_champion
from mfd_assets.preparation import cleaned_set_trainable, training_set_trainable
from mfd_assets.training import (
    CandidateModelConfig,
    ChampionModelConfig,
    JitterConfig,
    candidate_model,
    champion_model,
    holdout,
)
from mfd_resources import ReadingsStore, Tracking

pytestmark = pytest.mark.integration


def _sample(rows: int) -> pd.DataFrame:
    df = load_ai4i()
    df.insert(0, "id", np.arange(1, len(df) + 1, dtype="int64"))
    part, _ = train_test_split(df, train_size=rows, stratify=df[LABEL_COLUMN], random_state=3)
    return part.reset_index(drop=True)


def _sets(frame: pd.DataFrame) -> list[dg.AssetsDefinition]:
    """Stand-ins for the preparation assets: `frame`, and `frame` without its first 100 rows."""

    @dg.asset(name="training_set")
    def training_set() -> pd.DataFrame:
        return frame

    @dg.asset(name="cleaned_set", deps=[training_set])
    def cleaned_set() -> pd.DataFrame:
        return frame.iloc[100:]

    return [training_set, cleaned_set]


def _train(
    tracking: Tracking, frame: pd.DataFrame, family: str, margin: float = 0.0
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [
            *_sets(frame),
            holdout,
            candidate_model,
            champion_model,
            training_set_trainable,
            cleaned_set_trainable,
        ],
        resources={"tracking": tracking, "readings_store": ReadingsStore(url="sqlite://")},
        run_config=dg.RunConfig(
            {
                "candidate_model": CandidateModelConfig(
                    family=family, folds=2, trials=1, jitter=JitterConfig(copies=2)
                ),
                "champion_model": ChampionModelConfig(margin=margin),
            }
        ),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    [event] = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in event.metadata.items()}


def test_candidate_and_champion_then_rollback_job(mlflow: MlflowServer, tmp_path) -> None:
    tracking = Tracking(
        tracking_uri=mlflow.tracking_uri, experiment_name=unique("exp-"), model_name=unique("model-")
    )
    frame = _sample(2000)

    first = _train(tracking, frame, "logreg")
    assert first.success
    candidate = _metadata(first, "candidate_model")
    assert candidate["family"] == "logreg"
    assert candidate["mlflow_run"].startswith(f"{mlflow.tracking_uri}/#/experiments/")
    assert "'logreg'" in str(candidate["cv_by_family"]) and "data:image/png;base64," in candidate["pr_curve"]
    assert candidate["latency_row_ms"] > 0
    run = tracking.client().get_run(candidate["mlflow_run"].rsplit("/", 1)[-1])
    assert run.data.tags["dagster_run_id"] == first.run_id
    assert run.data.tags["training_set"] == "cleaned_set"
    assert run.data.tags["training_set_version"] == candidate["training_set_version"]
    # trained on cleaned_set without the holdout rows, scored on the holdout asset's rows
    held = first.output_for_node("holdout")
    logged = first.output_for_node("candidate_model")
    assert len(held) == len(logged.candidate.holdout) == 400
    train = without_holdout(frame.iloc[100:], frozenset(held["id"]))
    # calibrated (sigmoid) around the logistic regression, fit on the rows and their 2 jittered copies
    scaler = logged.candidate.pipeline.named_steps["model"].model.steps[0][1]
    assert scaler.n_samples_seen_ == 3 * len(train) < 3 * 1600
    # scored on the shifted holdouts, a table each, the clean vs shifted plot and the reliability plot
    for shift in ("clean", "noisy", "label_noise", "ai4i_to_fleet", "fleet_to_ai4i"):
        assert "'logreg'" in str(candidate[f"holdout_{shift}"]), shift
    assert "data:image/png;base64," in candidate["shifted_holdouts"]
    assert "data:image/png;base64," in candidate["reliability"]
    assert candidate["shift_settings"]["noise_seed"] == 1 and candidate["objective"] == "robust"
    assert run.data.metrics["shift_noisy_pr_auc"] == pytest.approx(
        logged.candidate.shift_table("noisy").loc["logreg", "pr_auc"]
    )
    assert "holdout_brier" in run.data.metrics
    champion = _metadata(first, "champion_model")
    assert champion["promoted"] is True and champion["champion_version"] == "1"

    second = _train(tracking, frame, "hgb")
    assert second.success
    champion = _metadata(second, "champion_model")
    assert champion["promoted"] is True, champion["reason"]
    assert (champion["previous_champion_version"], champion["champion_version"]) == ("1", "2")
    assert "challenger v2" in str(champion["scores"]) and "champion v1" in str(champion["scores"])

    rolled = rollback_champion.execute_in_process(resources={"tracking": tracking})
    assert rolled.success and rolled.output_for_node("move_champion_back") == "1"
    client = tracking.client()
    assert str(client.get_model_version_by_alias(tracking.model_name, CHAMPION).version) == "1"
    assert registry.history(client, tracking.model_name) == ["1"]


def test_one_class_training_set_fails_the_blocking_check(mlflow: MlflowServer) -> None:
    tracking = Tracking(
        tracking_uri=mlflow.tracking_uri, experiment_name=unique("exp-"), model_name=unique("model-")
    )
    healthy = _sample(1000)
    healthy = healthy[healthy[LABEL_COLUMN] == 0]
    result = _train(tracking, healthy, "logreg")
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["trainable"].passed is False
    assert "one class" in evaluations["trainable"].description
    assert result.asset_materializations_for_node("candidate_model") == []
    assert result.asset_materializations_for_node("champion_model") == []
