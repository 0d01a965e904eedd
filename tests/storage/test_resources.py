"""Each resource against its real service and its local twin with the same test body; settings wiring."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import mlflow
import pytest
from dagster_aws.s3 import S3Resource

from mfd.errors import MfdError
from mfd.services import S3Server
from mfd.settings import Settings
from mfd.storage.connect import objects_from_settings, s3_target
from mfd.storage.objects import S3Objects
from mfd_resources import LocalObjectStore, ObjectStore, S3ObjectStore, Tracking, resources_for


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(root=str(tmp_path / "objects"))
    server: S3Server = request.getfixturevalue("s3")
    s3 = S3Resource(
        endpoint_url=server.endpoint_url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )
    return S3ObjectStore(s3=s3, bucket=request.getfixturevalue("bucket"))


@pytest.fixture(params=["local", "server"])
def tracking(request: pytest.FixtureRequest, tmp_path: Path) -> Tracking:
    if request.param == "local":
        return Tracking(
            tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_location=(tmp_path / "art").as_uri()
        )
    return Tracking(
        tracking_uri=request.getfixturevalue("mlflow").tracking_uri, experiment_name="resource-test"
    )


def test_object_store_resource_in_an_asset(object_store: ObjectStore) -> None:
    @dg.asset
    def moved_file(object_store: ObjectStore) -> int:
        objects = object_store.objects()
        objects.put("incoming/r.csv", b"machine_id\nM-1\n")
        objects.move("incoming/r.csv", "processed/r.csv")
        return len(objects.list("processed/"))

    result = dg.materialize([moved_file], resources={"object_store": object_store})
    assert result.output_for_node("moved_file") == 1
    assert object_store.objects().get("processed/r.csv") == b"machine_id\nM-1\n"


def test_tracking_resource_logs_a_run(tracking: Tracking) -> None:
    experiment = tracking.experiment_id()
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_metric("roc_auc", 0.5)
        mlflow.log_text("hello", "note.txt")
    stored = tracking.client().get_run(run.info.run_id)
    assert stored.data.metrics["roc_auc"] == 0.5
    assert mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/note.txt") == "hello"


def test_embedded_defaults_live_under_home(tmp_path: Path) -> None:
    resources = resources_for(Settings(home=tmp_path))
    assert resources["readings_store"].url == f"sqlite:///{tmp_path / 'readings.db'}"
    assert isinstance(resources["object_store"], LocalObjectStore)
    assert resources["tracking"].tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_s3_chosen_when_bucket_given(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, s3_bucket="plant", s3_endpoint_url="http://127.0.0.1:9")
    store = resources_for(settings)["object_store"]
    assert isinstance(store, S3ObjectStore) and store.bucket == "plant"


def test_resource_and_cli_reach_s3_as_the_one_target_says(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        s3_bucket=bucket,
        s3_prefix="site-1/",
        s3_endpoint_url=s3.endpoint_url,
        s3_region=s3.region,
        s3_access_key_id=s3.access_key,
        s3_secret_access_key=s3.secret_key,
    )
    target = s3_target(settings)
    assert target is not None and set(target.secrets) == {"aws_access_key_id", "aws_secret_access_key"}
    assert s3_target(Settings(home=tmp_path)) is None
    store = resources_for(settings)["object_store"]
    assert isinstance(store, S3ObjectStore) and (store.bucket, store.prefix) == (bucket, "site-1/")
    assert (store.s3.endpoint_url, store.s3.region_name) == (target.endpoint_url, target.region_name)
    assert store.s3.max_attempts == target.max_attempts
    # secrets reach the resource as environment variables, never as values
    assert store.s3.aws_access_key_id == dg.EnvVar("MFD_S3_ACCESS_KEY_ID")
    assert store.s3.aws_secret_access_key == dg.EnvVar("MFD_S3_SECRET_ACCESS_KEY")
    client = target.client()
    assert client.meta.config.connect_timeout == 5
    assert client.meta.config.retries == {"mode": "standard", "total_max_attempts": target.max_attempts + 1}
    cli_objects = objects_from_settings(settings)
    assert isinstance(cli_objects, S3Objects)
    cli_objects.put("incoming/x.csv", b"a\n1\n")
    assert [o.key for o in cli_objects.list("incoming/")] == ["incoming/x.csv"]


def test_production_names_missing_settings(tmp_path: Path) -> None:
    with pytest.raises(MfdError, match="MFD_DATABASE_URL.*MFD_MLFLOW_TRACKING_URI"):
        resources_for(Settings(home=tmp_path, deployment="production", s3_bucket="b"))


def test_definitions_load() -> None:
    from mfd_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)


def test_definitions_keep_their_names_and_tell_the_true_lineage() -> None:
    from mfd_assets import preparation, training
    from mfd_assets.definitions import defs

    graph = defs.resolve_asset_graph()

    def parents(key: str) -> set[str]:
        return {k.to_user_string() for k in graph.get(dg.AssetKey(key)).parent_keys}

    assert parents("holdout") == {"training_set"}
    assert parents("candidate_model") == {"cleaned_set", "holdout"}
    assert "holdout" in parents("augmented_gan") and "holdout" in parents("quality_scores")
    assert graph.get(dg.AssetKey("holdout")).group_name == "training"
    checks = {k.to_user_string() for k in graph.asset_check_keys}
    assert {"training_set:expectations", "training_set:trainable", "cleaned_set:trainable"} <= checks
    in_preparation = dg.load_asset_checks_from_modules([preparation])
    assert {k.to_user_string() for c in in_preparation for k in c.check_keys} >= {
        "training_set:expectations",
        "training_set:trainable",
        "cleaned_set:trainable",
    }
    assert not dg.load_asset_checks_from_modules([training])
    assert {s.name for s in defs.sensors} == {
        "prediction_sensor",
        "champion_changed_sensor",
        "incoming_files_sensor",
        "maintenance_files_sensor",
        "retraining_sensor",
        "run_failure_sensor",
        "alert_delivery_sensor",
        "shadow_promotion_sensor",
    }
    assert {j.name for j in defs.jobs} >= {
        "prediction_job",
        "drift_job",
        "ingest_readings_job",
        "ingest_peripheral_job",
        "champion_bento_job",
        "training_job",
        "rollback_champion",
        "main_job",
    }
