"""Retraining that starts itself, evaluated with real Dagster instances, PostgreSQL and MLflow: a failed
drift check starts exactly one run and a quiet one none; new labels and the schedule start runs past their
cooldowns; triggers due together start one run; a failed retrain leaves the champion and says why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import unique

from mfd.modeling.model_io import CHAMPION
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.services import MlflowServer
from mfd.storage.tables import run_failures
from mfd_assets.detection import drift_report, drift_within_thresholds
from mfd_assets.jobs import retraining_job
from mfd_assets.preparation import (
    cleaned_set,
    training_set,
    training_set_expectations,
    training_set_trainable,
)
from mfd_assets.training import candidate_model, champion_model, holdout
from mfd_resources import ReadingsStore, Tracking
from mfd_sensors.retraining import (
    FAILED_RETRAIN_TAG,
    TRIGGER_TAG,
    RetrainCursor,
    RetrainPolicy,
    build_retraining_sensor,
    run_failure_sensor,
)

pytestmark = pytest.mark.integration
NO_LABELS = RetrainPolicy(new_labels=10**9)  # only drift and the schedule can start a run


def sample() -> pd.DataFrame:
    return load_ai4i().sample(3000, random_state=1)


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(torque_nm=frame["torque_nm"] + 12, air_temperature_k=frame["air_temperature_k"] + 4)


def tick(sensor: dg.SensorDefinition, instance, readings: ReadingsStore, tracking: Tracking, cursor=None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"readings_store": readings, "tracking": tracking}
    )
    return sensor.evaluate_tick(context)


def drift_checked(instance: dg.DagsterInstance, readings: ReadingsStore) -> bool:
    result = dg.materialize(
        [drift_report, drift_within_thresholds], instance=instance, resources={"readings_store": readings}
    )
    (evaluation,) = result.get_asset_check_evaluations()
    return evaluation.passed


@pytest.fixture
def tracking(mlflow: MlflowServer) -> Tracking:
    """A registered model name with no versions: no champion, so no label baseline."""
    return Tracking(tracking_uri=mlflow.tracking_uri, model_name=unique("retrain-"))


def test_drift_on_shifted_readings_starts_exactly_one_run_and_quiet_readings_none(
    postgres, tracking: Tracking
) -> None:
    sensor = build_retraining_sensor(NO_LABELS)
    with dg.instance_for_test() as instance:
        quiet = ReadingsStore(url=postgres.create_database(unique("t")))
        quiet.insert(sample())
        assert drift_checked(instance, quiet)
        first = tick(sensor, instance, quiet, tracking)
        assert first.run_requests == [] and "no failed drift check" in first.skip_message

    with dg.instance_for_test() as instance:
        loud = ReadingsStore(url=postgres.create_database(unique("t")))
        loud.insert(shifted(sample()))
        assert not drift_checked(instance, loud)
        first = tick(sensor, instance, loud, tracking)
        (request,) = first.run_requests
        assert request.tags[TRIGGER_TAG] == "drift" and request.job_name in (None, retraining_job.name)
        again = tick(sensor, instance, loud, tracking, first.cursor)  # same failed evaluation: no new run
        assert again.run_requests == []

        assert not drift_checked(instance, loud)  # drift persists: a new failed evaluation, in the cooldown
        cooling = tick(sensor, instance, loud, tracking, again.cursor)
        assert cooling.run_requests == [] and "drift cooldown" in cooling.skip_message
        past = RetrainCursor.parse(again.cursor)
        past = RetrainCursor(
            {k: v - timedelta(days=1) for k, v in past.started.items()}, past.drift_evaluation
        )
        (later,) = tick(sensor, instance, loud, tracking, past.dumps()).run_requests
        assert later.tags[TRIGGER_TAG] == "drift" and later.run_key != request.run_key


def test_new_labels_and_drift_due_together_start_one_run(postgres, tracking: Tracking) -> None:
    sensor = build_retraining_sensor(RetrainPolicy(new_labels=1000))
    readings = ReadingsStore(url=postgres.create_database(unique("t")))
    readings.insert(shifted(sample()))  # 3000 labelled readings, no champion: all of them are new
    with dg.instance_for_test() as instance:
        assert not drift_checked(instance, readings)
        first = tick(sensor, instance, readings, tracking)
        (request,) = first.run_requests
        assert request.tags[TRIGGER_TAG] == "drift" and request.tags["mfd/triggers"] == "drift,labels"
        # The same tick evaluated again (its cursor update lost) asks for the same run_key: Dagster
        # starts one run per run_key, so the two triggers still start one training run.
        (again,) = tick(sensor, instance, readings, tracking).run_requests
        assert again.run_key == request.run_key and again.run_key.startswith("retrain-drift:")
        assert RetrainCursor.parse(first.cursor).labels_at == 3000
        assert tick(sensor, instance, readings, tracking, first.cursor).run_requests == []

        more = load_ai4i().drop(sample().index).head(1000)
        readings.insert(more)  # 1000 more labelled readings since the last labels run, still cooling down
        cooling = tick(sensor, instance, readings, tracking, first.cursor)
        assert cooling.run_requests == [] and "labels cooldown" in cooling.skip_message
        past = RetrainCursor.parse(first.cursor)
        past = RetrainCursor(
            {k: v - timedelta(hours=7) for k, v in past.started.items()}, past.drift_evaluation, 3000
        )
        (labels,) = tick(sensor, instance, readings, tracking, past.dumps()).run_requests
        assert labels.tags[TRIGGER_TAG] == "labels" and labels.tags["mfd/labelled_readings"] == "4000"


def test_the_schedule_starts_a_run_once_its_interval_passed(pg_url: str, tracking: Tracking) -> None:
    sensor = build_retraining_sensor(RetrainPolicy(new_labels=10**9, every=timedelta(hours=1)))
    readings = ReadingsStore(url=pg_url)
    with dg.instance_for_test() as instance:
        first = tick(sensor, instance, readings, tracking)  # starts the clock
        assert first.run_requests == [] and "next scheduled run" in first.skip_message
        old = RetrainCursor({"schedule": datetime.now(UTC) - timedelta(hours=2)}).dumps()
        (request,) = tick(sensor, instance, readings, tracking, old).run_requests
        assert request.tags[TRIGGER_TAG] == "schedule"


def test_a_failed_retrain_leaves_the_champion_and_records_why(pg_url: str, champion: Tracking) -> None:
    readings = ReadingsStore(url=pg_url)
    readings.insert(load_ai4i().query("machine_failure == 0").head(500))  # one class: not trainable
    client = champion.client()
    before = client.get_model_version_by_alias(champion.model_name, CHAMPION).version
    defs = dg.Definitions(
        assets=[training_set, cleaned_set, holdout, candidate_model, champion_model],
        asset_checks=[training_set_expectations, training_set_trainable],
        jobs=[retraining_job],
        sensors=[run_failure_sensor],
        resources={"readings_store": readings, "tracking": champion},
    )
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def(retraining_job.name).execute_in_process(
            instance=instance, tags={TRIGGER_TAG: "labels"}, raise_on_error=False
        )
        assert not result.success
        assert client.get_model_version_by_alias(champion.model_name, CHAMPION).version == before
        run = instance.get_run_by_id(result.run_id)
        failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
        context = dg.build_run_status_sensor_context(
            sensor_name="run_failure_sensor",
            dagster_event=failure,
            dagster_instance=instance,
            dagster_run=run,
            resources={"readings_store": readings, "tracking": champion},
        ).for_run_failure()
        run_failure_sensor(context)
    with readings.engine.connect() as conn:
        (row,) = conn.execute(sa.select(run_failures)).mappings().all()
    assert (row["run_id"], row["job_name"], row["trigger"]) == (result.run_id, "retraining_job", "labels")
    assert "training_set" in row["message"] or "check" in row["message"], row["message"]
    tag = client.get_registered_model(champion.model_name).tags[FAILED_RETRAIN_TAG]
    assert tag.startswith(result.run_id)
