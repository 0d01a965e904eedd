"""MLflow connection: tracking URI, experiment with a known artifact location, reachability with retries."""

from __future__ import annotations

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
    with_retries(
        lambda: client.search_experiments(max_results=1),
        what=f"MLflow tracking server {tracking_uri}",
        setting=setting,
    )
    return client


def experiment_id(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment `name`, created with `artifact_location` if missing (None: the server's default)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)
