"""`Tracking`: the MLflow tracking server and model registry (a local SQLite store as the twin)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import Engine

from mfd.alerts.costs import CostMatrix
from mfd.modeling import experiment
from mfd.modeling.experiment import LoggedCandidate
from mfd.registry import promotion as registry
from mfd.registry.promotion import ChampionStatus, Decision, Rollback
from mfd.registry.shadow_evidence import ShadowGate
from mfd.serving.client import service_down
from mfd.settings import project_home
from mfd.storage import tracking


class Tracking(dg.ConfigurableResource):
    """MLflow tracking + registry. Local twin: `sqlite:///.mfd/mlflow.db` with artifacts under `.mfd/`."""

    tracking_uri: str
    artifact_location: str | None = None
    experiment_name: str = "mfd"
    model_name: str = "mfd-failure-classifier"
    home: str | None = None  # MFD_HOME: keeps the last champion loaded for scoring; None: ./.mfd
    service_url: str | None = None  # MFD_SERVICE_URL: where `bentoml serve` serves the champion, if anywhere

    @property
    def local_home(self) -> Path:
        """Where the last champion loaded is kept, to score with when the registry is down."""
        return Path(self.home) if self.home else project_home()

    def service_down(self) -> str | None:
        """Why the champion's service does not answer (None: it does, or none is configured)."""
        return service_down(self.service_url) if self.service_url else None

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
        shadow_gate: ShadowGate | None = None,
        engine: Engine | None = None,
        keep_champion: str | None = None,
    ) -> Decision:
        """Register the logged candidate and move `champion` to it only if it wins the gate
        (`mfd.registry.promotion.promote_logged`, as `mfd train --register` does); `keep_champion`, a reason,
        keeps the champion whatever the holdout says."""
        return registry.promote_logged(
            self.client(),
            self.model_name,
            logged,
            metric=metric,
            margin=margin,
            tags=tags,
            cost_matrix=cost_matrix,
            shadow_gate=shadow_gate,
            engine=engine,
            keep_champion=keep_champion,
        )

    def promote_challenger(self, engine: Engine, gate: ShadowGate) -> Decision:
        """Move `champion` to the shadowed `challenger` when its holdout verdict and shadow evidence pass."""
        return registry.promote_challenger(self.client(), self.model_name, engine, gate)

    def rollback(self) -> Rollback:
        """Move `champion` back to the previous champion version."""
        return registry.rollback(self.client(), self.model_name)

    def champion_status(self) -> ChampionStatus:
        return registry.champion_status(self.client(), self.model_name)
