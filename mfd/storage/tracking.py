"""MLflow connection: tracking URI, experiment with a known artifact location, reachability with retries."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from mfd.errors import with_retries


def connect(tracking_uri: str, setting: str = "MFD_MLFLOW_TRACKING_URI") -> MlflowClient:
    """A client for `tracking_uri` (also made the process default), after checking the server answers."""
    if tracking_uri.startswith("sqlite:///"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with _one_try_per_request():
        with_retries(
            lambda: client.search_experiments(max_results=1),
            what=f"MLflow tracking server {tracking_uri}",
            setting=setting,
        )
    return client


@contextmanager
def _one_try_per_request(timeout_s: int = 10) -> Iterator[None]:
    """MLflow's own HTTP retries (minutes by default, with urllib3 warnings) off for the reachability
    probe, whose bounded retries then decide; later requests keep MLflow's settings."""
    saved = {
        name: os.environ.get(name)
        for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    }
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(timeout_s)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment `name`, created with `artifact_location` if missing (None: the server's default)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)
