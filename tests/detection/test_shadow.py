"""The shadow challenger against real PostgreSQL and MLflow: its predictions are stored keyed by model
version, never create failure events, and its evidence agrees with the stored rows."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import start_run
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

from mfd.alerts.costs import DecisionPolicy
from mfd.cli.main import main
from mfd.detection.batches import score_batch
from mfd.detection.shadow import Challenger, challenger_version, shadow_rows
from mfd.modeling.model_io import CHALLENGER, CHAMPION, FailureModel, load_version, log_failure_model
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry.shadow_evidence import shadow_evidence
from mfd.schema import LABEL_COLUMN
from mfd.storage.tables import failure_events, predictions, shadow_predictions
from mfd_assets.detection import prediction_batches
from mfd_resources import ReadingsStore, Tracking

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def mfd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def with_challenger(champion: Tracking) -> Tracking:
    """The champion fixture's model plus a logistic-regression version under the `challenger` alias."""
    ai4i = load_ai4i()
    pipeline = build_pipeline(LogisticRegression(max_iter=500))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    with start_run(experiment_id=champion.experiment_id()):
        _, version = log_failure_model(pipeline, ai4i, registered_name=champion.model_name, threshold=0.2)
    champion.client().set_registered_model_alias(champion.model_name, CHALLENGER, version.version)
    return champion


def frame(store: ReadingsStore, table: sa.Table) -> pd.DataFrame:
    with store.engine.connect() as conn:
        return pd.read_sql(sa.select(table), conn)


def run_batch(
    store: ReadingsStore, tracking: Tracking, first_id: int, last_id: int
) -> dg.ExecuteInProcessResult:
    ids = {"first_id": first_id, "last_id": last_id}
    return dg.materialize(
        [prediction_batches],
        resources={"readings_store": store, "tracking": tracking},
        run_config={"ops": {"prediction_batches": {"config": ids}}},
    )


def test_shadow_rows_are_keyed_by_version_and_never_become_failure_events(
    pg_url: str, with_challenger: Tracking, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    client = with_challenger.client()
    name = with_challenger.model_name
    champion_v = str(client.get_model_version_by_alias(name, CHAMPION).version)
    challenger_v = challenger_version(client, name)
    assert challenger_v is not None and challenger_v != champion_v
    store = ReadingsStore(url=pg_url)
    sample = load_ai4i().sample(1500, random_state=4)
    store.insert(sample)
    ids = store.read()["id"].tolist()

    result = run_batch(store, with_challenger, ids[0], ids[-1])
    (meta,) = [
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.path[-1] == "shadow_predictions"
    ]
    assert meta["model_version"].value == challenger_v and meta["rows_scored"].value == 1500

    shadow = frame(store, shadow_predictions)
    champion_rows = frame(store, predictions)
    events = frame(store, failure_events)
    assert len(shadow) == len(champion_rows) == 1500
    assert set(shadow["model_version"]) == {challenger_v} and set(champion_rows["model_version"]) == {
        champion_v
    }
    assert set(events["model_version"]) == {champion_v}
    assert set(events["reading_id"]) == set(champion_rows.loc[champion_rows["label"] == 1, "reading_id"])
    challenger_alerts = set(shadow.loc[shadow["label"] == 1, "reading_id"])
    assert challenger_alerts - set(events["reading_id"]), "the challenger raises alerts the champion does not"

    run_batch(store, with_challenger, ids[0], ids[-1])  # a re-run writes the same rows once
    assert len(frame(store, shadow_predictions)) == 1500 and len(frame(store, failure_events)) == len(events)

    evidence = shadow_evidence(store.engine, challenger_v, pd.Timedelta("2h"))
    both = shadow.merge(champion_rows, on="reading_id", suffixes=("_s", "_c"))
    assert evidence["agreement"].iloc[0] == pytest.approx((both["label_s"] == both["label_c"]).mean())
    assert evidence.loc[f"challenger v{challenger_v}", "alerts"] == len(challenger_alerts)
    labels = store.read().set_index("id")[LABEL_COLUMN].astype(int)
    expected_pr_auc = average_precision_score(labels.loc[shadow["reading_id"]], shadow["probability"])
    assert evidence.loc[f"challenger v{challenger_v}", "pr_auc_labelled"] == pytest.approx(expected_pr_auc)
    machine_days = sample.groupby(
        [sample["machine_id"], pd.to_datetime(sample["timestamp"], utc=True).dt.floor("D")]
    ).ngroups
    assert evidence.loc[f"champion v{champion_v}", "alerts_per_machine_day"] == pytest.approx(
        len(events) / machine_days
    )

    monkeypatch.setenv("MFD_DATABASE_URL", pg_url)
    monkeypatch.setenv("MFD_MLFLOW_TRACKING_URI", with_challenger.tracking_uri)
    monkeypatch.setenv("MFD_MODEL_NAME", name)
    capsys.readouterr()
    assert main(["champion", "compare", "--days", "0"]) == 0
    out = capsys.readouterr().out
    assert f"challenger v{challenger_v}" in out and f"champion v{champion_v}" in out
    assert f"{evidence['agreement'].iloc[0]:.4g}"[:4] in out and "replay" not in out


def test_no_shadow_when_the_challenger_is_the_champion(pg_url: str, champion: Tracking) -> None:
    client = champion.client()
    saved = challenger_version(client, champion.model_name)
    champion_v = str(client.get_model_version_by_alias(champion.model_name, CHAMPION).version)
    client.set_registered_model_alias(champion.model_name, CHALLENGER, champion_v)
    try:
        store = ReadingsStore(url=pg_url)
        store.insert(load_ai4i().head(50))
        ids = store.read()["id"].tolist()
        result = run_batch(store, champion, ids[0], ids[-1])
        materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
        assert materialized == {"prediction_batches"} and frame(store, shadow_predictions).empty
        assert len(frame(store, predictions)) == 50
    finally:
        if saved is not None:
            client.set_registered_model_alias(champion.model_name, CHALLENGER, saved)


class _FixedProbability:
    """A stand-in pyfunc: the failure probability is the reading's tool wear / 100."""

    def predict(self, readings: pd.DataFrame) -> pd.Series:
        return readings["tool_wear_min"] / 100.0


def test_shadow_labels_follow_the_challengers_thresholds_per_machine_type() -> None:
    batch = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "machine_id": ["M-1", "M-2", "M-3", "M-4"],
            "machine_type": ["L", "L", "H", "H"],
            "air_temperature_k": 300.0,
            "process_temperature_k": 310.0,
            "rotational_speed_rpm": 1500.0,
            "torque_nm": 40.0,
            "tool_wear_min": [30.0, 60.0, 30.0, 60.0],
        }
    )
    model = FailureModel("m", "2", 0.5, _FixedProbability())
    one = Challenger(model, DecisionPolicy.from_tags({}, 0.5))
    assert shadow_rows(one, batch)["label"].tolist() == [0, 1, 0, 1]  # one threshold, 0.5
    per_type = Challenger(model, DecisionPolicy.from_tags({"thresholds": '{"L": 0.7, "H": 0.2}'}, 0.5))
    assert shadow_rows(per_type, batch)["label"].tolist() == [0, 0, 1, 1]


class _Broken:
    """A stand-in pyfunc that cannot score (a corrupt or incompatible challenger artifact)."""

    def predict(self, readings: pd.DataFrame) -> pd.Series:
        raise RuntimeError("challenger artifact corrupt")


def test_a_challenger_that_cannot_score_never_fails_the_champions_batch(
    pg_url: str, champion: Tracking
) -> None:
    store = ReadingsStore(url=pg_url)
    store.insert(load_ai4i().head(200))
    ids = store.read()["id"].tolist()
    model = load_version(champion.client(), champion.model_name, CHAMPION)
    broken = Challenger(FailureModel("m", "99", 0.5, _Broken()), DecisionPolicy.from_tags({}, 0.5))
    result = score_batch(store.engine, model, ids[0], ids[-1], challenger=broken)
    assert result.shadow is not None and result.shadow.rows_scored == 0
    assert result.shadow.error == "RuntimeError: challenger artifact corrupt"
    assert "shadow" not in result.seconds
    assert len(frame(store, predictions)) == 200 and frame(store, shadow_predictions).empty
    assert len(frame(store, failure_events)) == result.failures
