"""Logging a failure model to MLflow and loading it back by registry URI, the contract every consumer uses.

A registered version is a cloudpickled sklearn Pipeline (readings -> probability) logged with
`pyfunc_predict_fn="predict_proba"`, its decision threshold in the version tag `threshold`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, failure_probability

THRESHOLD_TAG = "threshold"
CHAMPION = "champion"
CHALLENGER = "challenger"


def _requirements() -> list[str]:
    # Explicit requirements: MLflow's inference loads the model in a subprocess, which costs seconds.
    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "pandas", "numpy", "cloudpickle")]


def log_failure_model(
    pipeline: Pipeline, sample: pd.DataFrame, *, registered_name: str | None = None, threshold: float = 0.5
) -> tuple[str, ModelVersion | None]:
    """Log `pipeline` in the active run; register it under `registered_name` if given.

    Returns the model URI and the registered version (tagged with its threshold).
    """
    inputs = sample[list(MODEL_INPUT_COLUMNS)].head(5)
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        signature=infer_signature(inputs, pipeline.predict_proba(inputs)),
        input_example=inputs,
        pip_requirements=_requirements(),
        registered_model_name=registered_name,
    )
    if registered_name is None:
        return info.model_uri, None
    client = MlflowClient()
    mv = client.get_model_version(registered_name, str(info.registered_model_version))
    client.set_model_version_tag(registered_name, mv.version, THRESHOLD_TAG, f"{threshold:.6f}")
    return info.model_uri, mv


@dataclass(frozen=True)
class FailureModel:
    """A loaded model version: call `probability(readings)`; `threshold` turns it into labels."""

    name: str
    version: str
    threshold: float
    pyfunc: mlflow.pyfunc.PyFuncModel

    def probability(self, readings: pd.DataFrame) -> np.ndarray:
        return failure_probability(self.pyfunc.predict(readings[list(MODEL_INPUT_COLUMNS)]))

    def label(self, readings: pd.DataFrame) -> np.ndarray:
        return (self.probability(readings) >= self.threshold).astype("int8")


def register_logged_model(
    model_uri: str, name: str, *, threshold: float, tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register an already logged model as a new version of `name`, tagged with its threshold (no alias)."""
    return mlflow.register_model(model_uri, name, tags={**(tags or {}), THRESHOLD_TAG: f"{threshold:.6f}"})


def load_model_version(client: MlflowClient, name: str, version: str) -> FailureModel:
    """Load version `version` of registered model `name` through mlflow.pyfunc."""
    mv = client.get_model_version(name, str(version))
    pyfunc = mlflow.pyfunc.load_model(f"models:/{name}/{mv.version}")
    return FailureModel(name, str(mv.version), float(mv.tags.get(THRESHOLD_TAG, 0.5)), pyfunc)


def load_version(client: MlflowClient, name: str, alias: str = CHAMPION) -> FailureModel:
    """Load the version that `alias` points at (raises mlflow's RestException if none)."""
    return load_model_version(client, name, str(client.get_model_version_by_alias(name, alias).version))
