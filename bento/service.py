"""The champion as a BentoML service: `bentoml serve bento.service:MachineFailureService` from the repo root.

Wiring only: validation, guards and champion loading live in `mfd.serving` and `mfd.registry`. Settings are
MFD_* variables (see docs/serving.md), read once per worker when the app and the service are built, never at
import.
"""

from __future__ import annotations

import gc
import os
from functools import cache
from typing import Annotated, Any

# One OpenMP thread per worker: on small adaptive batches, waking a thread team costs more than the trees
# (docs/serving.md has the figures). Set before sklearn loads.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# MLflow's client retries a dead server for minutes by default; the service falls back to its local copy.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

import anyio  # noqa: E402
import bentoml  # noqa: E402
from bentoml.exceptions import BentoMLException  # noqa: E402
from pydantic import WrapValidator  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from mfd.errors import MfdError  # noqa: E402
from mfd.serving.bentoml_tuning import bind_apis, json_output  # noqa: E402
from mfd.serving.champion import Champion, Poller, sibling_signal_file  # noqa: E402
from mfd.serving.compat import cancel_request_timers  # noqa: E402
from mfd.serving.guards import ApiKeyMiddleware, BodyLimitMiddleware, required_keys  # noqa: E402
from mfd.serving.readings import (  # noqa: E402
    EXPLAIN_LIMIT,
    Explained,
    Prediction,
    Reading,
    RejectedRequest,
    parse_readings,
)
from mfd.settings import Settings, load_settings  # noqa: E402
from mfd.storage import readings as readings_store  # noqa: E402


@cache
def service_settings() -> Settings:
    """The MFD_* settings, read on first use: when the worker builds its app, before the service."""
    return load_settings()


predictions_total = bentoml.metrics.Counter(
    name="mfd_predictions", documentation="Readings scored", labelnames=["model_name", "model_version"]
)
failures_total = bentoml.metrics.Counter(
    name="mfd_predicted_failures",
    documentation="Readings predicted to fail",
    labelnames=["model_name", "model_version"],
)


def _checked(value: Any, _handler: Any) -> list[Reading]:
    """Validate before batching, so one bad request never fails the batch it would have joined."""
    try:
        return parse_readings(value, service_settings().max_readings)
    except RejectedRequest as exc:
        raise BentoMLException(str(exc), error_code=exc.status) from None


def _checked_few(value: Any, _handler: Any) -> list[Reading]:
    """As `_checked`, at most EXPLAIN_LIMIT readings: SHAP costs per reading."""
    try:
        return parse_readings(value, min(EXPLAIN_LIMIT, service_settings().max_readings))
    except RejectedRequest as exc:
        raise BentoMLException(str(exc), error_code=exc.status) from None


Readings = Annotated[list[Reading], WrapValidator(_checked)]
FewReadings = Annotated[list[Reading], WrapValidator(_checked_few)]


async def _status(_: Request) -> JSONResponse:
    """What this worker serves and from where: version, threshold, `registry` or `local copy`, last error."""
    return JSONResponse({**bentoml.get_current_service().champion.status(), "worker_pid": os.getpid()})


status_app = Starlette(routes=[Route("/status", _status, methods=["GET"])])


@bentoml.service(
    name="machine_failure",
    # One worker per core of the 2-core target: a worker's event loop saturates one core; three were slower
    # (bench/serve.py; the figures are in docs/serving.md).
    workers=2,
    traffic={"timeout": 30},
    metrics={"enabled": True},
    logging={"access": {"enabled": False}},
    # No span per prediction: with no exporter configured they cost ~25% of single-reading throughput.
    tracing={"excluded_urls": ["/predict"]},
)
@bentoml.asgi_app(status_app, path="/")
class MachineFailureService:
    """Failure probability for machine readings from the registry's champion model."""

    @bentoml.on_deployment
    def refuse_an_open_production_service() -> None:
        """Once, in `bentoml serve` before any worker starts: production without MFD_API_KEYS exits with a
        one-line error instead of serving every route unauthenticated."""
        try:
            required_keys(service_settings().deployment, service_settings().api_keys)
        except MfdError as exc:
            raise SystemExit(f"error: {exc}") from None

    def __init__(self) -> None:
        settings = service_settings()
        self.champion = Champion(settings.tracking_uri, settings.model_name, settings.home)
        self.champion.start()
        signal_file = sibling_signal_file(settings.home)
        self.poller = Poller(self.champion, settings.reload_interval_s, signal_file)
        self.poller.start()
        # The readings store `/predict_machine` reads a machine's history from (connects on first use).
        self.readings = readings_store.create_engine(settings.readings_url)
        bind_apis(self, ["predict", "explain"])
        # Everything loaded so far (mlflow, sklearn, pandas, the model) lives as long as the process: keep it out
        # of the garbage collector's full scans, which stalled requests (docs/serving.md).
        gc.freeze()

    def __is_ready__(self) -> bool:
        return self.champion.ready

    # The batch bounds as measured with bench/serve.py's load (docs/serving.md): larger or smaller batches
    # were within noise; the looser latency bound sheds load only when a worker is far behind.
    @bentoml.api(batchable=True, max_batch_size=2_000, max_latency_ms=1_000)
    def predict(self, readings: Readings) -> list[Prediction]:
        """Score readings: probability, label, threshold, model name and version, one per reading."""
        results = self.champion.served.predict(readings)
        if results:
            labels = (results[0]["model_name"], results[0]["model_version"])
            predictions_total.labels(*labels).inc(len(results))
            failures_total.labels(*labels).inc(sum(r["label"] for r in results))
        return results

    @bentoml.api(route="/explain")
    def explain(self, readings: FewReadings) -> list[Explained]:
        """Score and explain readings: `predict`'s answer plus the top SHAP features and the nearest physics
        rule with its margin, for at most EXPLAIN_LIMIT readings."""
        return self.champion.served.explain(readings)

    @bentoml.api(route="/predict_machine")
    def predict_machine(self, machine_id: str) -> list[Prediction]:
        """Score a machine's latest stored reading from its id alone: where the profile declares windows,
        with the window features of its stored history (probability, label, rul_estimate, ...)."""
        try:
            results = self.champion.served.predict_machine(self.readings, machine_id)
        except RejectedRequest as exc:
            raise BentoMLException(str(exc), error_code=exc.status) from None
        predictions_total.labels(results[0]["model_name"], results[0]["model_version"]).inc(len(results))
        return results

    @bentoml.api(route="/reload")
    async def reload(self) -> dict[str, Any]:
        """Re-check the champion alias now, here and in the other workers; swap to a new version if it moved."""
        await anyio.to_thread.run_sync(self.champion.refresh)
        self.poller.nudge()
        return self.champion.status()

    @bentoml.on_shutdown
    def stop_polling(self) -> None:
        self.poller.stop()


def guarded(app: Any) -> ApiKeyMiddleware:
    """`app` behind the API-key check and, inside it, the body cap: an unauthenticated request gets 401
    before its size is even looked at. Built with the app, so the settings are read then; in production
    without MFD_API_KEYS it raises, and the service does not start."""
    settings = service_settings()
    keys = required_keys(settings.deployment, settings.api_keys)
    limited = BodyLimitMiddleware(app, max_bytes=settings.max_request_bytes)
    return ApiKeyMiddleware(limited, keys=keys)


# BentoML's per-request timers and list serialisation cost more than the model (mfd/serving/compat.py,
# mfd/serving/bentoml_tuning.py).
cancel_request_timers()
predict_api = MachineFailureService.apis["predict"]
predict_api.output_spec = json_output(predict_api.output_spec)
MachineFailureService.add_asgi_middleware(guarded)
