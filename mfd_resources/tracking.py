"""`Tracking`: the MLflow tracking server and model registry (a local SQLite store as the twin)."""

from __future__ import annotations

import dagster as dg
from mlflow.tracking import MlflowClient

from mfd import tracking


class Tracking(dg.ConfigurableResource):
    """MLflow tracking + registry. Local twin: `sqlite:///.mfd/mlflow.db` with artifacts under `.mfd/`."""

    tracking_uri: str
    artifact_location: str | None = None
    experiment_name: str = "mfd"
    model_name: str = "mfd-failure-classifier"

    def client(self) -> MlflowClient:
        """Connected client; also sets the process-wide MLflow tracking and registry URI."""
        return tracking.connect(self.tracking_uri)

    def experiment_id(self) -> str:
        return tracking.experiment_id(self.client(), self.experiment_name, self.artifact_location)
