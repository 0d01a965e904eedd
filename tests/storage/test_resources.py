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


def test_production_names_missing_settings(tmp_path: Path) -> None:
    with pytest.raises(MfdError, match="MFD_DATABASE_URL.*MFD_MLFLOW_TRACKING_URI"):
        resources_for(Settings(home=tmp_path, deployment="production", s3_bucket="b"))


def test_definitions_load() -> None:
    from mfd_assets.definitions import defs

    dg.Definitions.validate_loadable(defs)
