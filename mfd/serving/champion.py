"""The champion the service answers with: loaded from the MLflow registry alias, or from the newest local
copy when the registry is down; re-checked on demand and swapped atomically when the alias moves."""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import bentoml
import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline

from mfd.errors import MfdError
from mfd.modeling.model_io import CHAMPION, THRESHOLD_TAG, FailureModel
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, failure_probability
from mfd.serving import local_copies
from mfd.serving.readings import Prediction, Reading
from mfd.storage import tracking

log = logging.getLogger(__name__)

Source = Literal["registry", "local copy"]


@dataclass(frozen=True)
class ServedModel:
    """A model version ready to score readings, and where it came from."""

    model: FailureModel
    pipeline: Pipeline
    source: Source
    loaded_at: str

    @classmethod
    def from_copy(cls, copy: bentoml.Model, source: Source) -> ServedModel:
        meta = copy.info.metadata
        pyfunc = bentoml.mlflow.load_model(copy)
        model = FailureModel(
            str(meta["mlflow_name"]), str(meta["mlflow_version"]), float(meta["threshold"]), pyfunc
        )
        return cls(model, pyfunc.get_raw_model(), source, datetime.now(UTC).isoformat(timespec="seconds"))

    def predict(self, readings: list[Reading]) -> list[Prediction]:
        """Probability, label, threshold, model name and version for each reading, one model call."""
        # From the records directly: half the time of a dict of per-column lists (0.24 vs 0.44 ms per 1,000).
        frame = pd.DataFrame.from_records(readings, columns=MODEL_INPUT_COLUMNS)
        probabilities = failure_probability(self.pipeline.predict_proba(frame)).tolist()
        m = self.model
        return [
            {
                "probability": p,
                "label": int(p >= m.threshold),
                "threshold": m.threshold,
                "model_name": m.name,
                "model_version": m.version,
            }
            for p in probabilities
        ]


def _one_line(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[:1]
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


class Champion:
    """Holds the served model; `refresh()` follows the registry alias (thread-safe, readers never block)."""

    def __init__(self, tracking_uri: str, model_name: str, alias: str = CHAMPION) -> None:
        self.tracking_uri, self.model_name, self.alias = tracking_uri, model_name, alias
        self.registry_error: str | None = None
        self._client: MlflowClient | None = None
        self._served: ServedModel | None = None
        self._lock = threading.Lock()

    @property
    def served(self) -> ServedModel:
        if self._served is None:
            raise MfdError(f"no model loaded for {self.model_name}@{self.alias}")
        return self._served

    @property
    def ready(self) -> bool:
        return self._served is not None

    def _alias_version(self) -> tuple[str, float]:
        if self._client is None:
            self._client = tracking.connect(self.tracking_uri)
        try:
            mv = self._client.get_model_version_by_alias(self.model_name, self.alias)
        except Exception:
            self._client = None  # reconnect next time
            raise
        return str(mv.version), float(mv.tags.get(THRESHOLD_TAG, 0.5))

    def start(self) -> ServedModel:
        """Load the alias from the registry; if that fails, the newest local copy (MfdError if none)."""
        if self.refresh():
            return self.served
        copy = local_copies.newest_copy(self.model_name)
        if copy is None:
            raise MfdError(
                f"cannot load {self.model_name}@{self.alias}: registry failed ({self.registry_error}) and the "
                "BentoML model store holds no local copy; check MFD_MLFLOW_TRACKING_URI and MFD_MODEL_NAME"
            )
        self._served = ServedModel.from_copy(copy, "local copy")
        log.warning(
            "registry unavailable (%s); serving local copy %s version %s",
            self.registry_error,
            self.model_name,
            self._served.model.version,
        )
        return self._served

    def refresh(self) -> bool:
        """Follow the alias: load and swap in a new version; True when the registry answered."""
        with self._lock:
            try:
                version, threshold = self._alias_version()
                current = self._served
                if current is not None and current.model.version == version:
                    if current.source != "registry":
                        self._served = replace(current, source="registry")
                        log.info(
                            "registry back; %s version %s is still the %s",
                            self.model_name,
                            version,
                            self.alias,
                        )
                else:
                    copy = local_copies.keep_copy(self.model_name, version, threshold)
                    self._served = ServedModel.from_copy(copy, "registry")
                    log.info("serving %s version %s (%s)", self.model_name, version, self.alias)
            except Exception as exc:  # noqa: BLE001 - any registry failure keeps the current model
                self.registry_error = _one_line(exc)
                log.warning("champion check failed, keeping the current model: %s", self.registry_error)
                return False
            self.registry_error = None
            return True

    def status(self) -> dict[str, Any]:
        """What is served and from where, for the status route."""
        served = self._served
        return {
            "ready": served is not None,
            "model_name": self.model_name,
            "alias": self.alias,
            "model_version": served.model.version if served else None,
            "threshold": served.model.threshold if served else None,
            "source": served.source if served else None,
            "loaded_at": served.loaded_at if served else None,
            "registry_error": self.registry_error,
        }


def sibling_signal_file() -> Path:
    """A file shared by the workers of one `bentoml serve` (they have the same parent process)."""
    return Path(tempfile.gettempdir()) / f"mfd-champion-{os.getppid()}.signal"


class Poller:
    """Calls `champion.refresh()` every `interval_s` seconds (0: never) and after another worker's `nudge()`.

    Workers of one server share `signal_file`: `nudge()` writes a new token to it, and every other worker's
    poller, which reads it each `check_s` seconds, re-checks the alias when the token changes.
    """

    def __init__(
        self, champion: Champion, interval_s: float, signal_file: Path, check_s: float = 1.0
    ) -> None:
        self.champion, self.interval_s, self.check_s = champion, interval_s, check_s
        self.signal_file = signal_file
        self._lock = threading.Lock()
        self._seen = self._token()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-poller", daemon=True)

    def _token(self) -> str:
        try:
            return self.signal_file.read_text()
        except OSError:
            return ""

    def nudge(self) -> None:
        """Make the other workers re-check the alias (this one just did)."""
        token = uuid.uuid4().hex
        staged = self.signal_file.with_name(f"{self.signal_file.name}.{token}")
        with self._lock:
            staged.write_text(token)
            staged.replace(self.signal_file)  # atomic: a reader sees the old token or the new one
            self._seen = token

    def start(self) -> None:
        self._thread.start()

    def _nudged(self) -> bool:
        with self._lock:
            token = self._token()
            nudged, self._seen = token != self._seen, token
        return nudged

    def _run(self) -> None:
        due = time.monotonic() + self.interval_s
        while not self._stop.wait(self.check_s):
            if self._nudged() or (self.interval_s > 0 and time.monotonic() >= due):
                due = time.monotonic() + self.interval_s
                self.champion.refresh()

    def stop(self) -> None:
        self._stop.set()
        self.signal_file.unlink(missing_ok=True)
