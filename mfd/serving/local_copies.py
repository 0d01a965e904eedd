"""Local copies of registry versions in the BentoML model store: the fallback when the registry is down.

A copy is tagged `<name>:v<version>` with the MLflow name, version and threshold as labels, so the newest
copy is a complete served model without the registry.
"""

from __future__ import annotations

import fcntl
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import bentoml
from bentoml.exceptions import NotFound

FRAMEWORK = "bentoml.mlflow"


def store_name(model_name: str) -> str:
    """The BentoML store name for an MLflow registered model (lowercase letters, digits, `-_.`)."""
    return re.sub(r"[^a-z0-9._-]+", "-", model_name.lower()).strip("-._") or "model"


def local_tag(model_name: str, version: str) -> str:
    return f"{store_name(model_name)}:v{version}"


def find_copy(model_name: str, version: str) -> bentoml.Model | None:
    try:
        return bentoml.models.get(local_tag(model_name, version))
    except NotFound:
        return None


@contextmanager
def _one_process_at_a_time() -> Iterator[None]:
    """Serialise copying models across processes: the workers of a service start and reload together."""
    with (Path(tempfile.gettempdir()) / "mfd-model-copies.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def keep_copy(model_name: str, version: str, threshold: float) -> bentoml.Model:
    """The store copy of registry version `version`, downloading it once (registry URI must be set)."""
    with _one_process_at_a_time():
        found = find_copy(model_name, version)
        if found is not None:
            return found
        return bentoml.mlflow.import_model(
            local_tag(model_name, version),
            f"models:/{model_name}/{version}",
            labels={"mlflow_name": store_name(model_name), "mlflow_version": version},
            metadata={"mlflow_name": model_name, "mlflow_version": version, "threshold": threshold},
        )


def newest_copy(model_name: str) -> bentoml.Model | None:
    """The most recently stored copy of `model_name`, or None."""
    copies = [m for m in bentoml.models.list(store_name(model_name)) if m.info.module == FRAMEWORK]
    return max(copies, key=lambda m: m.info.creation_time, default=None)
