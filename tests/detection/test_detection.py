"""Detection against real services: the prediction sensor, prediction batches and failure events on
PostgreSQL (and the SQLite twin), the champion from a real MLflow server, drift checks, `mfd events`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import unique
from forwarder import Forwarder
from mlflow import start_run
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.alarms import read_scored
from mfd.cli.main import main
from mfd.detection.planning import DetectionCursor
from mfd.errors import ServiceUnavailable
from mfd.features import FEATURE_COLUMNS
from mfd.modeling.model_io import load_version, log_failure_model
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry.champion import load_champion
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer
from mfd.storage import readings as store
from mfd.storage.tables import alert_outbox, failure_events, predictions
from mfd_assets.detection import drift_report, drift_within_thresholds, prediction_batches
from mfd_resources import ReadingsStore, Tracking
from mfd_sensors.prediction import build_prediction_sensor

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def mfd_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Local model copies go to a temp MFD_HOME, never the repo's .mfd/."""
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def insert_ai4i(url: str, rows: int) -> ReadingsStore:
    readings = ReadingsStore(url=url)
    readings.insert(load_ai4i().head(rows))
    return readings


def reading_ids(readings: ReadingsStore) -> list[int]:
    """Stored ids in order (PostgreSQL sequences leave gaps, so tests never assume 1..n)."""
    return readings.read()["id"].tolist()


def evaluate(sensor: dg.SensorDefinition, cursor: str | None, readings: ReadingsStore, tracking: Tracking):
    context = dg.build_sensor_context(
        cursor=cursor, resources={"readings_store": readings, "tracking": tracking}
    )
    return sensor.evaluate_tick(context)


def batch_config(first_id: int, last_id: int) -> dict:
    return {"ops": {"prediction_batches": {"config": {"first_id": first_id, "last_id": last_id}}}}


def run_batch(
    readings: ReadingsStore, tracking: Tracking, first_id: int, last_id: int
) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [prediction_batches],
        resources={"readings_store": readings, "tracking": tracking},
        run_config=batch_config(first_id, last_id),
    )


def batch_metadata(result: dg.ExecuteInProcessResult) -> dict:
    (materialization,) = result.asset_materializations_for_node("prediction_batches")
    return {k: v.value for k, v in materialization.metadata.items()}


def table_frame(readings: ReadingsStore, table: sa.Table) -> pd.DataFrame:
    with readings.engine.connect() as conn:
        return pd.read_sql(sa.select(table).order_by(table.c.reading_id), conn)


def test_sensor_requests_one_run_for_new_readings_then_skips(pg_url: str, champion: Tracking) -> None:
    readings = ReadingsStore(url=pg_url)
    sensor = build_prediction_sensor(max_rows_per_run=1000, max_runs_per_tick=3)

    empty = evaluate(sensor, None, readings, champion)
    assert empty.run_requests == [] and "no readings to score after id 0" in empty.skip_message

    insert_ai4i(pg_url, 100)
    last = reading_ids(readings)[-1]
    tick = evaluate(sensor, None, readings, champion)
    (request,) = tick.run_requests
    assert request.run_key == f"predictions-1-{last}"
    assert request.run_config["ops"]["prediction_batches"]["config"] == {
        "first_id": 1,
        "last_id": last,
        "max_invalid_share": 0.01,
        "unscored_after_minutes": 10.0,
        "unscored_lookback_hours": 24.0,
    }
    assert request.tags["mfd/rows"] == "100"
    assert DetectionCursor.parse(tick.cursor) == DetectionCursor(settled=last)

    idle = evaluate(sensor, tick.cursor, readings, champion)
    assert idle.run_requests == [] and f"no readings to score after id {last}" in idle.skip_message


def test_sensor_catches_up_a_backlog_in_bounded_batches(pg_url: str, champion: Tracking) -> None:
    readings = insert_ai4i(pg_url, 250)
    sensor = build_prediction_sensor(max_rows_per_run=60, max_runs_per_tick=3)
    ids = reading_ids(readings)
    ends = [ids[59], ids[119], ids[179], ids[239], ids[249]]

    first = evaluate(sensor, None, readings, champion)
    assert [r.run_key for r in first.run_requests] == [
        f"predictions-1-{ends[0]}",
        f"predictions-{ends[0] + 1}-{ends[1]}",
        f"predictions-{ends[1] + 1}-{ends[2]}",
    ]
    assert DetectionCursor.parse(first.cursor).settled == ends[2]

    second = evaluate(sensor, first.cursor, readings, champion)
    assert [r.run_key for r in second.run_requests] == [
        f"predictions-{ends[2] + 1}-{ends[3]}",
        f"predictions-{ends[3] + 1}-{ends[4]}",
    ]
    assert [r.tags["mfd/rows"] for r in second.run_requests] == ["60", "10"]
    assert DetectionCursor.parse(second.cursor).settled == ends[4]


def test_sensor_skips_with_a_reason_when_there_is_no_champion(pg_url: str, mlflow: MlflowServer) -> None:
    readings = insert_ai4i(pg_url, 10)
    nameless = Tracking(tracking_uri=mlflow.tracking_uri, model_name=unique("never-trained-"))
    tick = evaluate(build_prediction_sensor(100, 2), None, readings, nameless)
    assert tick.run_requests == []
    assert "has no version with alias 'champion'" in tick.skip_message
    assert tick.cursor is None  # the readings wait for a champion


def test_batch_rerun_writes_the_same_rows_once(
    readings_url: str, champion: Tracking, capsys, monkeypatch
) -> None:
    readings = insert_ai4i(readings_url, 1500)
    last = reading_ids(readings)[-1]
    first = batch_metadata(run_batch(readings, champion, 1, last))
    before = table_frame(readings, predictions), table_frame(readings, failure_events)
    second = batch_metadata(run_batch(readings, champion, 1, last))
    after = table_frame(readings, predictions), table_frame(readings, failure_events)

    assert first["rows_scored"] == second["rows_scored"] == 1500
    assert len(after[0]) == 1500 and after[0]["reading_id"].is_unique
    assert after[1]["reading_id"].tolist() == before[1]["reading_id"].tolist()
    assert after[1]["id"].tolist() == before[1]["id"].tolist()  # upserted in place, not re-inserted
    np.testing.assert_allclose(after[0]["probability"], before[0]["probability"])
    assert second["model_source"] == "memory cache"
    # The batch went to the alarms from memory: the alarms step after it has nothing to read back, and
    # the re-run's readings were taken already.
    assert first["alarm_crossings"] == first["failures"] > 0 and first["alarms_opened"] > 0
    assert second["alarm_crossings"] == second["alarms_opened"] == second["alarms_bumped"] == 0
    assert read_scored(readings.engine, 1, last).empty

    # One event per predicted failure, matching the champion's own labels, with contributing sensors.
    model = load_version(champion.client(), champion.model_name)
    labels = model.label(store.read_readings(readings.engine))
    assert first["failures"] == int(labels.sum()) == len(after[1]) > 0
    assert set(after[1]["reading_id"]) == set(after[0].loc[after[0]["label"] == 1, "reading_id"])
    top = [json.loads(t) for t in after[1]["top_features"]]
    assert all(1 <= len(t) <= 3 and {f["feature"] for f in t} <= set(FEATURE_COLUMNS) for t in top)
    assert all(t[0]["attribution"] >= t[-1]["attribution"] > 0 for t in top)
    # Each event has its alert in the outbox, explained, once (the re-run added none).
    alerts = table_frame(readings, alert_outbox)
    assert sorted(alerts["reading_id"]) == sorted(after[1]["reading_id"])
    payload = json.loads(alerts["payload"].iloc[0])
    assert payload["explainer"] == "shap tree" and payload["machine_type"] in ("L", "M", "H")
    assert payload["nearest_rule"]["rule"] in ("heat_dissipation", "power", "overstrain")
    assert payload["threshold"] == 0.5  # the fixture's version has no thresholds per type
    assert first["expected_cost_no_model"] >= first["expected_cost_model"] > 0
    assert first["cost_avoided_vs_no_model"] == pytest.approx(
        first["expected_cost_no_model"] - first["expected_cost_model"], abs=0.02
    )

    monkeypatch.setenv("MFD_DATABASE_URL", readings_url)
    assert main(["events", "--since", "10m", "--limit", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 5 + 2  # header, rule, five events
    assert str(after[1].sort_values("reading_id").iloc[-1]["machine_id"]) in out
    assert main(["events", "--since", "ten minutes"]) == 2
    assert "--since expects a positive duration" in capsys.readouterr().err


def test_invalid_readings_are_counted_and_never_scored(pg_url: str, champion: Tracking) -> None:
    readings = insert_ai4i(pg_url, 200)
    ids = reading_ids(readings)
    bad = [ids[2], ids[4], ids[6], ids[8]]
    changes = ["torque_nm = 'NaN'", "torque_nm = -5", "machine_type = 'X'", "air_temperature_k = 1000"]
    with readings.engine.begin() as conn:
        for bad_id, change in zip(bad, changes, strict=True):
            conn.execute(sa.text(f"UPDATE readings SET {change} WHERE id = {bad_id}"))

    result = run_batch(readings, champion, ids[0], ids[-1])
    meta = batch_metadata(result)
    assert (meta["rows_read"], meta["rows_scored"], meta["invalid_rows"]) == (200, 196, 4)
    scored = set(table_frame(readings, predictions)["reading_id"])
    assert scored.isdisjoint(bad) and len(scored) == 196
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "valid_readings"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["first_invalid_ids"].value == bad


@pytest.fixture
def forwarder(mlflow: MlflowServer) -> Iterator[Forwarder]:
    fwd = Forwarder(mlflow.tracking_uri)
    yield fwd
    fwd.close()


def test_registry_down_scores_with_the_local_copy(
    pg_url: str, champion: Tracking, forwarder: Forwarder, mfd_home: Path
) -> None:
    readings = insert_ai4i(pg_url, 300)
    tracking = Tracking(tracking_uri=forwarder.uri, model_name=champion.model_name)
    ids = reading_ids(readings)
    up = batch_metadata(run_batch(readings, tracking, ids[0], ids[149]))
    assert (up["model_source"], up["registry_fallback"]) == ("registry", False)

    forwarder.close()
    down = batch_metadata(run_batch(readings, tracking, ids[150], ids[299]))
    assert (down["model_source"], down["registry_fallback"]) == ("local copy", True)
    assert "ConnectionRefusedError" in down["registry_error"]
    assert down["model_version"] == up["model_version"] and down["rows_scored"] == 150
    assert len(table_frame(readings, predictions)) == 300

    # Every reading has its prediction (the local copy scored 151-300): the sensor requests none of them
    # again (it skips scored readings, as those `mfd stream` scores) and its cursor passes them.
    tick = evaluate(build_prediction_sensor(1000, 1), str(ids[149]), readings, tracking)
    assert not tick.run_requests, [r.run_key for r in tick.run_requests]
    assert json.loads(tick.cursor)["settled"] == ids[299]

    with pytest.raises(ServiceUnavailable, match="no local copy"):
        load_champion(forwarder.uri, champion.model_name, tracking.client, mfd_home / "elsewhere")


def drift_check(url: str, frame: pd.DataFrame) -> dg.AssetCheckEvaluation:
    readings = ReadingsStore(url=url)
    readings.insert(frame)
    result = dg.materialize([drift_report, drift_within_thresholds], resources={"readings_store": readings})
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation


def test_drift_check_warns_on_shifted_readings_only(postgres) -> None:
    sample = load_ai4i().sample(3000, random_state=1)
    quiet = drift_check(postgres.create_database(unique("t")), sample)
    assert quiet.passed, quiet.metadata["drifted_features"].value

    shifted = sample.assign(
        torque_nm=sample["torque_nm"] + 12, air_temperature_k=sample["air_temperature_k"] + 4
    )
    loud = drift_check(postgres.create_database(unique("t")), shifted)
    assert not loud.passed and loud.severity == dg.AssetCheckSeverity.WARN
    drifted = set(loud.metadata["drifted_features"].value)
    assert {"torque_nm", "air_temperature_k", "power_w"} <= drifted
    assert "rotational_speed_rpm" not in drifted


def test_batches_label_at_the_versions_threshold_per_machine_type(
    pg_url: str, mlflow: MlflowServer, tmp_path: Path
) -> None:
    tracking = Tracking(
        tracking_uri=mlflow.tracking_uri, model_name=unique("typed-"), home=str(tmp_path / "home")
    )
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=30, random_state=0))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    with start_run(experiment_id=tracking.experiment_id()):
        _, version = log_failure_model(pipeline, ai4i, registered_name=tracking.model_name, threshold=0.5)
    thresholds = {"L": 0.05, "M": 0.5, "H": 0.95}
    client = tracking.client()
    client.set_model_version_tag(tracking.model_name, version.version, "thresholds", json.dumps(thresholds))
    client.set_registered_model_alias(tracking.model_name, "champion", version.version)

    readings = insert_ai4i(pg_url, 2000)
    ids = reading_ids(readings)
    meta = batch_metadata(run_batch(readings, tracking, ids[0], ids[-1]))
    assert meta["thresholds_by_machine_type"] == thresholds
    scored = table_frame(readings, predictions).merge(
        readings.read()[["id", "machine_type"]], left_on="reading_id", right_on="id"
    )
    expected = scored["probability"] >= scored["machine_type"].map(thresholds)
    assert (scored["label"] == expected.astype(int)).all()
    # the three types really decide differently here
    assert expected.sum() != (scored["probability"] >= 0.5).sum()
    alerts = table_frame(readings, alert_outbox)
    assert {json.loads(p)["threshold"] for p in alerts["payload"]} <= set(thresholds.values())
    assert meta["expected_cost_rules"] > 0 and "cost_avoided_vs_rules" in meta
