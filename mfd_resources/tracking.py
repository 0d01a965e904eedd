"""`Tracking`: the MLflow tracking server and model registry (a local SQLite store as the twin)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient

from mfd.alerts.costs import CostMatrix
from mfd.modeling import experiment
from mfd.modeling.experiment import LoggedCandidate
from mfd.registry import promotion as registry
from mfd.registry.promotion import ChampionStatus, Decision, Rollback
from mfd.settings import project_home
from mfd.storage import tracking


class Tracking(dg.ConfigurableResource):
    """MLflow tracking + registry. Local twin: `sqlite:///.mfd/mlflow.db` with artifacts under `.mfd/`."""

    tracking_uri: str
    artifact_location: str | None = None
    experiment_name: str = "mfd"
    model_name: str = "mfd-failure-classifier"
    home: str | None = None  # MFD_HOME: keeps the last champion loaded for scoring; None: ./.mfd

    @property
    def local_home(self) -> Path:
        """Where the last champion loaded is kept, to score with when the registry is down."""
        return Path(self.home) if self.home else project_home()

    def client(self) -> MlflowClient:
        """Connected client; also sets the process-wide MLflow tracking and registry URI."""
        return tracking.connect(self.tracking_uri)

    def experiment_id(self) -> str:
        return tracking.experiment_id(self.client(), self.experiment_name, self.artifact_location)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI."""
        return experiment.run_url(self.tracking_uri, experiment_id, run_id)

    def promote(
        self,
        logged: LoggedCandidate,
        metric: str,
        margin: float,
        tags: dict[str, str],
        cost_matrix: CostMatrix | None = None,
    ) -> Decision:
        """Register the logged candidate (thresholds per machine type from its validation predictions under
        `cost_matrix`, a model card) and move `champion` to it only if it wins on the shared holdout."""
        client = self.client()
        return registry.promote_candidate(
            client,
            self.model_name,
            logged.model_uri,
            logged.candidate.gate_holdout,  # the holdout (+ its noisy copy under the robust objective)
            threshold=logged.candidate.threshold,
            metric=metric,
            margin=margin,
            tags=tags,
            validation=getattr(logged.candidate, "validation", None),
            cost_matrix=cost_matrix,
        )

    def rollback(self) -> Rollback:
        """Move `champion` back to the previous champion version."""
        return registry.rollback(self.client(), self.model_name)

    def champion_status(self) -> ChampionStatus:
        return registry.champion_status(self.client(), self.model_name)
