"""Logging a failure model to MLflow and loading it back by registry URI, the contract every consumer uses.

A registered version is a cloudpickled sklearn Pipeline (readings -> probability) logged with
`pyfunc_predict_fn="predict_proba"`, its decision threshold in the version tag `threshold`.

Unpickling runs code, so every version is registered with the sha256 of the files that decide what loading
runs (`model.pkl`, the pickle, and `MLmodel`, which names the loader module and any code path) in the tags
of DIGEST_TAGS, and nothing is unpickled before the files on disk match them (`verify_artifact`). A
version without the tags (registered before them) is refused like a changed one.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.models import ModelSignature, infer_signature
from mlflow.tracking import MlflowClient
from mlflow.types.schema import AnyType, ColSpec, Schema
from sklearn.pipeline import Pipeline

from mfd.errors import MfdError
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, failure_probability
from mfd.modeling.rul import attached
from mfd.modeling.tree_predictor import chunked_predict_proba
from mfd.profiles import DEFAULT_PROFILE, ProfileError
from mfd.schema import PROFILE, SENSOR_COLUMNS

# The MLmodel metadata keys naming the profile a model was trained on.
PROFILE_KEY, PROFILE_DIGEST_KEY = "mfd_profile", "mfd_profile_digest"

THRESHOLD_TAG = "threshold"
CHAMPION = "champion"
CHALLENGER = "challenger"
# model-version tag -> the file of the MLflow model directory whose sha256 it holds
DIGEST_TAGS = {"model_sha256": "model.pkl", "mlmodel_sha256": "MLmodel"}
RETAG = ".venv/bin/python -m mfd.registry.retag"


class UntrustedModel(MfdError):
    """A model version whose files do not match the sha256 tags recorded at registration, or has none."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_digests(model_dir: Path) -> dict[str, str]:
    """The DIGEST_TAGS of the MLflow model in `model_dir` (UntrustedModel if a file is missing)."""
    missing = [file for file in DIGEST_TAGS.values() if not (model_dir / file).is_file()]
    if missing:
        raise UntrustedModel(f"{model_dir} is not a pickled MLflow model: no {', '.join(missing)}")
    return {tag: file_sha256(model_dir / file) for tag, file in DIGEST_TAGS.items()}


def expected_digests(mv: ModelVersion) -> dict[str, str]:
    """The digests version `mv` was registered with; UntrustedModel when it has none."""
    tags = dict(mv.tags or {})
    missing = [tag for tag in DIGEST_TAGS if not tags.get(tag)]
    if missing:
        raise UntrustedModel(
            f"model {mv.name!r} version {mv.version} has no {', '.join(missing)} tag (registered before "
            "artifact digests): refusing to unpickle it. Re-register it from a trusted run, or, once you "
            f"have checked its artifact, record its digests with `{RETAG} {mv.name} {mv.version}`"
        )
    return {tag: tags[tag] for tag in DIGEST_TAGS}


def verify_artifact(model_dir: Path, expected: dict[str, str], name: str, version: str) -> None:
    """Raise UntrustedModel unless the files in `model_dir` have the `expected` digests."""
    actual = artifact_digests(model_dir)
    changed = [DIGEST_TAGS[tag] for tag in DIGEST_TAGS if actual[tag] != expected.get(tag)]
    if changed:
        raise UntrustedModel(
            f"model {name!r} version {version}: {', '.join(changed)} in {model_dir} does not match the "
            "sha256 recorded at registration (changed since): refusing to unpickle it. Re-register the "
            "model from a trusted run and promote that version"
        )


def download_model(model_uri: str, dst: Path) -> Path:
    """The MLflow model at `model_uri` copied into directory `dst`; returns the model directory."""
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(dst)))


def _requirements() -> list[str]:
    # Explicit requirements: MLflow's inference loads the model in a subprocess, which costs seconds.
    return [f"{pkg}=={version(pkg)}" for pkg in ("scikit-learn", "pandas", "numpy", "cloudpickle")]


def signature(inputs: pd.DataFrame, outputs: np.ndarray) -> ModelSignature:
    """The inputs' signature with every sensor column typed `any`: a CSV gives integer speeds and wear (as
    the AI4I file does), which MLflow would refuse for a `double` column ("Can not safely convert int64 to
    float64"); the pipeline converts each sensor to float64 itself and fails on a value that is no number."""
    inferred = infer_signature(inputs, outputs)
    columns = [
        ColSpec(AnyType(), c.name, required=c.required) if c.name in SENSOR_COLUMNS else c
        for c in inferred.inputs.inputs
    ]
    return ModelSignature(Schema(columns), inferred.outputs)


def log_failure_model(
    pipeline: Pipeline, sample: pd.DataFrame, *, registered_name: str | None = None, threshold: float = 0.5
) -> tuple[str, ModelVersion | None]:
    """Log `pipeline` in the active run; register it under `registered_name` if given.

    Returns the model URI and the registered version (tagged with its threshold and digests).
    """
    inputs = sample[list(MODEL_INPUT_COLUMNS)].head(5)
    info = mlflow.sklearn.log_model(
        pipeline,
        name="model",
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        signature=signature(inputs, pipeline.predict_proba(inputs)),
        input_example=inputs,
        pip_requirements=_requirements(),
        metadata=profile_metadata(),
    )
    if registered_name is None:
        return info.model_uri, None
    return info.model_uri, register_logged_model(info.model_uri, registered_name, threshold=threshold)


def profile_metadata() -> dict[str, str]:
    """What a logged model records of the plant profile it was trained on (its MLmodel `metadata`)."""
    return {PROFILE_KEY: PROFILE.name, PROFILE_DIGEST_KEY: PROFILE.digest}


def trained_profile(pyfunc: Any) -> str:
    """The profile a loaded model was trained on; `ai4i` for a model logged before profiles existed."""
    model_meta = getattr(pyfunc, "metadata", None)
    recorded = getattr(model_meta, "metadata", None) or {}
    return str(recorded.get(PROFILE_KEY, DEFAULT_PROFILE))


@dataclass(frozen=True)
class FailureModel:
    """A loaded model version: call `probability(readings)`; `threshold` turns it into labels. A model of
    another plant profile than the active one is refused (ProfileError, one line) when it is loaded."""

    name: str
    version: str
    threshold: float
    pyfunc: mlflow.pyfunc.PyFuncModel

    def __post_init__(self) -> None:
        trained = trained_profile(self.pyfunc)
        if trained != PROFILE.name:
            raise ProfileError(
                f"model {self.name} version {self.version} was trained on plant profile {trained}; this "
                f"process runs profile {PROFILE.name} (MFD_PROFILE): its readings cannot be scored by it"
            )

    def probability(self, readings: pd.DataFrame) -> np.ndarray:
        return failure_probability(self.pyfunc.predict(readings[list(MODEL_INPUT_COLUMNS)]))

    def probability_of_valid(self, readings: pd.DataFrame, threads: int = 1) -> np.ndarray:
        """`probability` of readings that passed `mfd.validation` (detection's `invalid_reasons`): the
        scikit-learn pipeline called directly, without MLflow's schema enforcement, which checks the
        type of every value in Python and cost as much as the 100-tree model itself on 100k readings;
        rows in chunks over `threads` (`chunked_predict_proba`). Any other model goes through pyfunc.
        No readings: no probabilities (scikit-learn refuses an empty frame)."""
        if not len(readings):
            return np.empty(0)
        inputs = readings[list(MODEL_INPUT_COLUMNS)]
        raw = self._sklearn_model()
        if raw is None:
            return self.probability(inputs)
        return failure_probability(chunked_predict_proba(raw, inputs, threads))

    def _sklearn_model(self) -> Any | None:
        """The scikit-learn model a `mlflow.sklearn` pyfunc of `predict_proba` wraps, else None."""
        metadata = getattr(self.pyfunc, "metadata", None)
        conf = metadata.flavors.get("python_function", {}) if metadata is not None else {}
        if conf.get("loader_module") != "mlflow.sklearn" or conf.get("predict_fn") != "predict_proba":
            return None
        raw = self.pyfunc.get_raw_model()
        return raw if hasattr(raw, "predict_proba") else None

    def label(self, readings: pd.DataFrame) -> np.ndarray:
        return (self.probability(readings) >= self.threshold).astype("int8")

    def estimate_rul(self, frame: pd.DataFrame) -> np.ndarray | None:
        """Remaining useful life per reading of `frame` (the same columns `probability` takes, window
        features included), in the profile's time unit (hours), capped at the profile's `rul_cap`; None when
        the model has no RUL head (a profile without run-to-failure machines, or registered before heads)."""
        head = self._rul_head()
        return None if head is None else head.predict(frame)

    def _rul_head(self) -> Any | None:
        try:
            raw = self.pyfunc.get_raw_model()
        except (NotImplementedError, AttributeError):
            return None
        return attached(raw)


def register_logged_model(
    model_uri: str, name: str, *, threshold: float, tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register an already logged model as a new version of `name` (no alias), created with its threshold
    and the digests of its files as they are in the artifact store now."""
    with tempfile.TemporaryDirectory(prefix="mfd-register-") as tmp:
        digests = artifact_digests(download_model(model_uri, Path(tmp)))
    version_tags = {**(tags or {}), THRESHOLD_TAG: f"{threshold:.6f}", **digests}
    return mlflow.register_model(model_uri, name, tags=version_tags)


def load_verified(
    model_dir: Path, expected: dict[str, str], name: str, version: str
) -> mlflow.pyfunc.PyFuncModel:
    """`mlflow.pyfunc.load_model(model_dir)` once its files match `expected` (else UntrustedModel)."""
    verify_artifact(model_dir, expected, name, version)
    return mlflow.pyfunc.load_model(str(model_dir))


def load_model_version(client: MlflowClient, name: str, version: str) -> FailureModel:
    """Load version `version` of registered model `name` through mlflow.pyfunc, after checking its digests."""
    mv = client.get_model_version(name, str(version))
    expected = expected_digests(mv)
    with tempfile.TemporaryDirectory(prefix="mfd-model-") as tmp:
        model_dir = download_model(f"models:/{name}/{mv.version}", Path(tmp))
        pyfunc = load_verified(model_dir, expected, name, str(mv.version))
    return FailureModel(name, str(mv.version), float(mv.tags.get(THRESHOLD_TAG, 0.5)), pyfunc)


def load_version(client: MlflowClient, name: str, alias: str = CHAMPION) -> FailureModel:
    """Load the version that `alias` points at (raises mlflow's RestException if none)."""
    return load_model_version(client, name, str(client.get_model_version_by_alias(name, alias).version))
