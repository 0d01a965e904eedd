"""The champion in a real MLflow registry (PostgreSQL backend, S3 artifacts): gated promotion, rollback,
deleted champions, failed evaluations, pyfunc probabilities, an unreachable server, and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import unique
from mlflow import pyfunc
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.model_selection import train_test_split

from mfd.cli import main as cli
from mfd.errors import MfdError, ServiceUnavailable
from mfd.modeling.candidate import train_candidate
from mfd.modeling.experiment import LoggedCandidate, log_candidate
from mfd.modeling.model_io import CHALLENGER, CHAMPION
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry import promotion as registry
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer, free_port
from mfd.storage import tracking
from mfd_resources import Tracking

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    df = load_ai4i()
    part, _ = train_test_split(df, train_size=2500, stratify=df[LABEL_COLUMN], random_state=2)
    return part.reset_index(drop=True)


@pytest.fixture(scope="module")
def logged(mlflow: MlflowServer, small: pd.DataFrame) -> dict[str, LoggedCandidate]:
    """A weak (logreg) and a strong (hgb) candidate logged on the server, sharing one holdout."""
    client = tracking.connect(mlflow.tracking_uri)
    experiment = tracking.experiment_id(client, unique("exp-"))
    out = {}
    for family in ("logreg", "hgb"):
        candidate = train_candidate(small, family=family, folds=2, trials=1, seed=0)
        out[family] = log_candidate(candidate, experiment_id=experiment, settings={"folds": 2}, tags={})
    pd.testing.assert_frame_equal(out["logreg"].candidate.holdout, out["hgb"].candidate.holdout)
    return out


def _promote(client: MlflowClient, name: str, logged: LoggedCandidate, margin: float) -> registry.Decision:
    c = logged.candidate
    return registry.promote_candidate(
        client, name, logged.model_uri, c.holdout, threshold=c.threshold, margin=margin
    )


def test_logged_run_has_metrics_plots_and_a_probability_model(
    mlflow: MlflowServer, logged: dict[str, LoggedCandidate]
) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    run = client.get_run(logged["hgb"].run_id)
    for key in (
        "cv_roc_auc",
        "cv_pr_auc",
        "cv_f1",
        "cv_recall",
        "holdout_pr_auc",
        "latency_row_ms",
        "latency_10k_ms",
        "threshold",
    ):
        assert key in run.data.metrics
    assert run.data.params["family"] == "hgb"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/pr_curve.png"} <= artifacts  # and the shifted holdouts
    model = pyfunc.load_model(logged["hgb"].model_uri)
    assert model.metadata.signature is not None


def test_champion_moves_only_when_better_by_the_margin_and_rolls_back(
    mlflow: MlflowServer, logged: dict[str, LoggedCandidate], small: pd.DataFrame
) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    name = unique("model-")

    first = _promote(client, name, logged["logreg"], margin=0.0)
    assert first.promoted and first.champion_after == "1" and "first champion" in first.reason

    better = _promote(client, name, logged["hgb"], margin=0.01)
    assert better.challenger_scores["pr_auc"] > better.champion_scores["pr_auc"] + 0.01
    assert better.promoted and better.champion_before == "1" and better.champion_after == "2"

    same = _promote(client, name, logged["hgb"], margin=0.01)  # the same model again: gain 0 < margin
    assert not same.promoted and "champion kept" in same.reason and "margin 0.01" in same.reason
    assert same.champion_after == "2"
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "2"
    assert str(client.get_model_version_by_alias(name, CHALLENGER).version) == "3"
    assert registry.history(client, name) == ["1", "2"]
    assert client.get_model_version(name, "1").tags["demoted_at"]

    # the champion loads by alias through mlflow.pyfunc and returns probabilities on the reading schema
    model = pyfunc.load_model(f"models:/{name}@{CHAMPION}")
    proba = np.asarray(model.predict(small[list(MODEL_INPUT_COLUMNS)].head(20)))
    assert proba.shape == (20, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert ((proba >= 0) & (proba <= 1)).all() and not np.isin(proba, [0.0, 1.0]).all()

    back = registry.rollback(client, name)
    assert (back.from_version, back.to_version) == ("2", "1")
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"
    assert client.get_model_version(name, "2").tags["rolled_back_at"]
    assert registry.history(client, name) == ["1"]
    with pytest.raises(MfdError, match="no previous champion"):
        registry.rollback(client, name)


def test_deleted_champion_is_detected_and_replaced(
    mlflow: MlflowServer, logged: dict[str, LoggedCandidate]
) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    name = unique("model-")
    _promote(client, name, logged["logreg"], margin=0.0)
    client.delete_model_version(name, "1")
    status = registry.champion_status(client, name)
    assert status.version is None and status.recorded == "1" and "deleted" in status.problem
    with pytest.raises(MfdError, match="no previous champion"):
        registry.rollback(client, name)
    decision = _promote(client, name, logged["hgb"], margin=0.0)
    assert decision.promoted and "version 1, was deleted" in decision.reason
    assert registry.champion_status(client, name).problem is None


def test_a_version_that_fails_evaluation_gets_no_alias(
    mlflow: MlflowServer, logged: dict[str, LoggedCandidate]
) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    name = unique("model-")
    c = logged["hgb"].candidate
    broken = c.holdout.drop(columns=["torque_nm"])
    with pytest.raises(Exception, match="torque_nm"):
        registry.promote_candidate(client, name, logged["hgb"].model_uri, broken, threshold=c.threshold)
    version = client.get_model_version(name, "1")
    assert version.tags[registry.EVALUATION_TAG] == "failed"
    assert client.get_registered_model(name).aliases == {}
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias(name, CHAMPION)


def test_unreachable_mlflow_fails_after_retries_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    resource = Tracking(tracking_uri=f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ServiceUnavailable, match="MFD_MLFLOW_TRACKING_URI") as err:
        resource.experiment_id()
    assert "after 4 attempts" in str(err.value)


def test_cli_train_register_show_and_rollback(
    mlflow: MlflowServer, monkeypatch: pytest.MonkeyPatch, tmp_path, capsys: pytest.CaptureFixture
) -> None:
    name = unique("model-")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MFD_HOME", str(tmp_path / ".mfd"))
    monkeypatch.setenv("MFD_MLFLOW_TRACKING_URI", mlflow.tracking_uri)
    monkeypatch.setenv("MFD_MODEL_NAME", name)
    argv = ["train", "--family", "logreg", "--folds", "2", "--trials", "1", "--data", "ai4i", "--register"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert f"registered {name} version 1: first champion" in out and "ms/row" in out
    assert cli.main(["champion", "show"]) == 0
    shown = capsys.readouterr().out
    assert "champion: " + name + " version 1" in shown and "passed" in shown
    assert cli.main(["champion", "rollback"]) == 2
    assert "no previous champion" in capsys.readouterr().err
