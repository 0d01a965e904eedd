"""The champion the service answers with, from the shared loader (`mfd.registry.champion`: the registry
alias, or the local copy when the registry is down); re-checked on demand and swapped atomically when the
alias moves. `Poller` re-checks on a timer and when another worker of the server reloaded, told through a
signal file in a private (0700) directory under MFD_HOME that is never opened through a symlink."""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal

import pandas as pd
from mlflow.tracking import MlflowClient
from sklearn.pipeline import Pipeline
from sqlalchemy.engine import Engine

from mfd.alerts.costs import DecisionPolicy
from mfd.alerts.explanations import explainer_for, top_features
from mfd.alerts.rules import nearest_rules
from mfd.errors import MfdError, one_line
from mfd.modeling.model_io import CHAMPION, FailureModel
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, failure_probability
from mfd.registry.champion import LoadedChampion, load_champion, open_private, private_dir
from mfd.serving.history import latest_reading, request_frame
from mfd.serving.readings import Explained, Prediction, Reading, RejectedRequest
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
    policy: DecisionPolicy

    @classmethod
    def of(cls, loaded: LoadedChampion) -> ServedModel:
        source: Source = "local copy" if loaded.fallback else "registry"
        now = datetime.now(UTC).isoformat(timespec="seconds")
        return cls(loaded.model, loaded.model.pyfunc.get_raw_model(), source, now, loaded.policy)

    def predict(self, readings: list[Reading]) -> list[Prediction]:
        """Probability, label, the threshold used and the machine type it was chosen for, model name and
        version, and the remaining useful life (None without a RUL head) for each reading, one model call;
        window features over the request's readings of each machine (`mfd.serving.history`)."""
        # From the records directly: faster than a dict of per-column lists (docs/serving.md).
        return self.predict_frame(request_frame(readings))

    def predict_machine(self, engine: Engine, machine: str) -> list[Prediction]:
        """`predict` of the machine's latest stored reading, its window features over the stored history
        before it (`mfd.serving.history.latest_reading`); RejectedRequest (404) when it has no reading."""
        frame = latest_reading(engine, machine)
        if frame.empty:
            raise RejectedRequest(f"machine {machine!r} has no stored reading", HTTPStatus.NOT_FOUND)
        return self.predict_frame(frame)

    def predict_frame(self, frame: pd.DataFrame) -> list[Prediction]:
        """`predict` of readings already holding the model's input columns (a stored reading's too)."""
        inputs = (
            frame if list(frame.columns) == list(MODEL_INPUT_COLUMNS) else frame[list(MODEL_INPUT_COLUMNS)]
        )
        probabilities = failure_probability(self.pipeline.predict_proba(inputs))
        rul = self.model.estimate_rul(frame) if len(frame) else None
        ruls = [None] * len(frame) if rul is None else [float(v) for v in rul]
        m, kinds = self.model, frame["machine_type"]
        thresholds = self.policy.threshold_for(kinds).tolist()
        return [
            {
                "probability": p,
                "label": int(p >= t),
                "threshold": t,
                "machine_type": kind,
                "model_name": m.name,
                "model_version": m.version,
                "rul_estimate": r,
            }
            for p, t, kind, r in zip(probabilities.tolist(), thresholds, kinds.tolist(), ruls, strict=True)
        ]

    def explain(self, readings: list[Reading]) -> list[Explained]:
        """`predict` plus each reading's top SHAP features and nearest physics rule (SHAP per reading:
        milliseconds for trees, more for the sampled explainer; meant for a few readings)."""
        frame = request_frame(readings)
        explainer = explainer_for(self.model.name, self.model.version, self.pipeline)
        explanation = explainer.explain(frame)
        features, rules = top_features(frame, explanation), nearest_rules(frame)
        return [
            {
                **prediction,
                "top_features": json.loads(f),
                "nearest_rule": rule,
                "explainer": f"shap {explainer.kind}",
                "shap_output": explanation.output,
            }
            for prediction, f, rule in zip(self.predict(readings), features, rules, strict=True)
        ]


class Champion:
    """Holds the served model; `refresh()` follows the registry alias (thread-safe, readers never block)."""

    def __init__(self, tracking_uri: str, model_name: str, home: Path) -> None:
        self.tracking_uri, self.model_name, self.home = tracking_uri, model_name, home
        self.registry_error: str | None = None
        self._served: ServedModel | None = None
        self._lock = threading.Lock()

    def _connect(self) -> MlflowClient:
        return tracking.connect(self.tracking_uri)

    @property
    def served(self) -> ServedModel:
        if self._served is None:
            raise MfdError(f"no model loaded for {self.model_name}@{CHAMPION}")
        return self._served

    @property
    def ready(self) -> bool:
        return self._served is not None

    def start(self) -> ServedModel:
        """Load the champion: from the registry, else its local copy (MfdError if neither)."""
        self.refresh()
        if self._served is None:
            raise MfdError(f"cannot load {self.model_name}@{CHAMPION}: {self.registry_error}")
        return self._served

    def refresh(self) -> bool:
        """Follow the alias: load and swap in a new version; True when the registry answered.

        With the registry down, a model already served stays; a first load takes the local copy."""
        with self._lock:
            try:
                loaded = load_champion(self.tracking_uri, self.model_name, self._connect, self.home)
            except Exception as exc:  # noqa: BLE001 - no champion or no copy: keep the current model
                self.registry_error = one_line(exc)
                log.warning("champion check failed, keeping the current model: %s", self.registry_error)
                return False
            self.registry_error = loaded.registry_error
            current = self._served
            if loaded.fallback and current is not None:
                log.warning("champion check failed, keeping the current model: %s", self.registry_error)
            elif current is None or current.model.version != loaded.model.version:
                self._served = ServedModel.of(loaded)
                if loaded.fallback:
                    log.warning(
                        "registry unavailable (%s); serving local copy %s version %s",
                        self.registry_error,
                        self.model_name,
                        loaded.model.version,
                    )
                else:
                    log.info("serving %s version %s (%s)", self.model_name, loaded.model.version, CHAMPION)
            elif current.source != "registry":
                self._served = replace(current, source="registry")
                log.info(
                    "registry back; %s version %s is still the %s",
                    self.model_name,
                    current.model.version,
                    CHAMPION,
                )
            return not loaded.fallback

    def status(self) -> dict[str, Any]:
        """What is served and from where, for the status route."""
        served = self._served
        return {
            "ready": served is not None,
            "model_name": self.model_name,
            "alias": CHAMPION,
            "model_version": served.model.version if served else None,
            "threshold": served.model.threshold if served else None,
            "thresholds_by_machine_type": served.policy.thresholds if served else None,
            "source": served.source if served else None,
            "loaded_at": served.loaded_at if served else None,
            "registry_error": self.registry_error,
        }


def sibling_signal_file(home: Path) -> Path:
    """A file shared by the workers of one `bentoml serve` (they have the same parent process), in the
    private directory `<home>/serving/`."""
    return private_dir(home / "serving") / f"champion-{os.getppid()}.signal"


def _read_private(path: Path) -> str:
    """The text of `path`, "" if there is none; MfdError if `path` is a symlink."""
    try:
        fd = open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return ""
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise MfdError(f"{path} is a symlink: refusing to follow it (remove it)") from None
        raise
    with os.fdopen(fd) as f:
        return f.read()


class Poller:
    """Calls `champion.refresh()` every `interval_s` seconds (0: never) and after another worker's `nudge()`.

    Workers of one server share `signal_file`: `nudge()` writes a new token to it, and every other worker's
    poller, which reads it each `check_s` seconds, re-checks the alias when the token changes. A symlink
    at `signal_file` is refused (MfdError) when the poller is built and on `nudge()`, and ignored while
    polling.
    """

    def __init__(
        self, champion: Champion, interval_s: float, signal_file: Path, check_s: float = 1.0
    ) -> None:
        self.champion, self.interval_s, self.check_s = champion, interval_s, check_s
        self.signal_file = signal_file
        self._lock = threading.Lock()
        self._seen = _read_private(signal_file)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-poller", daemon=True)

    def _token(self) -> str:
        try:
            return _read_private(self.signal_file)
        except (OSError, MfdError) as exc:
            log.warning("cannot read %s: %s", self.signal_file, exc)
            return self._seen

    def nudge(self) -> None:
        """Make the other workers re-check the alias (this one just did)."""
        token = uuid.uuid4().hex
        staged = self.signal_file.with_name(f"{self.signal_file.name}.{token}")
        with self._lock:
            _read_private(self.signal_file)  # refuses a symlink planted there
            with os.fdopen(open_private(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as f:
                f.write(token)
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
