"""The champion for batch scoring: one registry lookup per batch, the model cached per version in memory
and on disk under MFD_HOME; the disk copy scores when the registry is unreachable."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from mfd.errors import MfdError, ServiceUnavailable
from mfd.modeling.model_io import CHAMPION, FailureModel, load_version

log = logging.getLogger(__name__)

_MISSING_CODES = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")
_memory: dict[tuple[str, str], FailureModel] = {}


class NoChampion(MfdError):
    """The registered model has no version with the champion alias."""


@dataclass(frozen=True)
class LoadedChampion:
    """The model to score with; `source` is registry, memory cache, disk cache or local copy (fallback)."""

    model: FailureModel
    source: str
    registry_error: str | None = None

    @property
    def fallback(self) -> bool:
        return self.registry_error is not None


def local_copy_path(home: Path, tracking_uri: str, name: str) -> Path:
    """Where the last champion loaded from registry `tracking_uri` is kept."""
    digest = hashlib.sha256(tracking_uri.encode()).hexdigest()[:12]
    return home / "models" / f"{name}-{digest}.champion.pkl"


def registry_error(tracking_uri: str, timeout: float = 3.0) -> str | None:
    """Why an HTTP registry cannot be reached (one TCP connect), or None.

    The MLflow client retries a dead server for minutes; this probe lets a batch fall back at once.
    """
    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return None
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _no_champion(tracking_uri: str, name: str) -> NoChampion:
    return NoChampion(
        f"registered model {name!r} has no version with alias {CHAMPION!r} at {tracking_uri}; "
        "train and promote one (champion_model asset)"
    )


def _alias_version(client: MlflowClient, tracking_uri: str, name: str) -> str:
    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException as exc:
        if exc.error_code in _MISSING_CODES:
            raise _no_champion(tracking_uri, name) from exc
        raise


def _read_copy(path: Path) -> FailureModel | None:
    try:
        with path.open("rb") as f:
            model = pickle.load(f)
    except FileNotFoundError:
        return None
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError) as exc:
        log.warning("ignoring unreadable local model copy %s: %s", path, exc)
        return None
    return model if isinstance(model, FailureModel) else None


def _write_copy(path: Path, model: FailureModel) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(pickle.dumps(model))
    os.replace(tmp, path)


def load_champion(
    tracking_uri: str, name: str, connect: Callable[[], MlflowClient], home: Path
) -> LoadedChampion:
    """The champion of `name`; raises NoChampion when none is promoted, ServiceUnavailable when the
    registry is down and no local copy exists. `connect` gives a client (e.g. `Tracking.client`)."""
    path = local_copy_path(home, tracking_uri, name)
    error = registry_error(tracking_uri)
    if error is None:
        try:
            client = connect()
            version = _alias_version(client, tracking_uri, name)
            cached = _memory.get((tracking_uri, name))
            if cached is not None and cached.version == version:
                return LoadedChampion(cached, "memory cache")
            model, source = _read_copy(path), "disk cache"
            if model is None or model.version != version:
                model, source = load_version(client, name), "registry"
                _write_copy(path, model)
            _memory[(tracking_uri, name)] = model
            return LoadedChampion(model, source)
        except (MlflowException, ServiceUnavailable, OSError) as exc:
            error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    model = _read_copy(path)
    if model is None:
        raise ServiceUnavailable(
            f"model registry {tracking_uri} failed ({error}) and no local copy of {name!r} exists at {path}; "
            "check MFD_MLFLOW_TRACKING_URI"
        )
    log.warning("registry failed (%s); scoring with local copy of %s version %s", error, name, model.version)
    return LoadedChampion(model, "local copy", error)


def champion_status(
    tracking_uri: str, name: str, connect: Callable[[], MlflowClient], home: Path
) -> tuple[str | None, str]:
    """For the sensor, without loading the model: (champion version, where from), or (None, why none)."""
    path = local_copy_path(home, tracking_uri, name)
    error = registry_error(tracking_uri)
    if error is None:
        try:
            return _alias_version(connect(), tracking_uri, name), "registry"
        except NoChampion as exc:
            return None, str(exc)
        except (MlflowException, ServiceUnavailable, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
    model = _read_copy(path)
    if model is None:
        return None, f"model registry {tracking_uri} unreachable ({error}) and no local copy at {path}"
    return model.version, f"local copy (registry unreachable: {error})"
