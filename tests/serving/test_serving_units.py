"""Serving pieces without a server: request validation, API keys, the body cap, the champion sensor."""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import bentoml
import dagster as dg
import httpx
import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware
from mlflow.tracking import MlflowClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from mfd.modeling.model_io import CHAMPION
from mfd.services import wait_until
from mfd.serving.bentoml_tuning import json_output
from mfd.serving.champion import Poller
from mfd.serving.compat import cancel_request_timers
from mfd.serving.guards import ApiKeyMiddleware, BodyLimitMiddleware, is_docs, key_matches, parse_keys
from mfd.serving.packaging import local_tag, store_name
from mfd.serving.readings import Prediction, RejectedRequest, parse_readings
from mfd.settings import Settings
from mfd_resources import Tracking
from mfd_sensors.champion import build_champion_changed_sensor

READING = {
    "machine_type": "M",
    "air_temperature_k": 300.0,
    "process_temperature_k": 310.0,
    "rotational_speed_rpm": 1500,
    "torque_nm": 40.0,
    "tool_wear_min": 0,
}


def test_keys_are_parsed_and_matched_only_as_bearer_tokens() -> None:
    keys = parse_keys(" alpha , ,beta ")
    assert keys == ("alpha", "beta")
    assert key_matches("Bearer beta", keys) and key_matches("bearer alpha", keys)
    for header in (None, "", "Bearer", "Bearer ", "Bearer gamma", "Basic alpha", "alpha", "Bearer alphabeta"):
        assert not key_matches(header, keys), header


def test_valid_readings_pass_with_ints_taken_as_floats() -> None:
    parsed = parse_readings([READING, {**READING, "machine_type": "H"}], max_readings=10)
    assert [r["machine_type"] for r in parsed] == ["M", "H"]
    assert parsed[0]["rotational_speed_rpm"] == 1500.0


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        ([], HTTPStatus.UNPROCESSABLE_ENTITY, "readings is empty"),
        ("x", HTTPStatus.UNPROCESSABLE_ENTITY, "must be a list of readings, got str"),
        ([READING] * 11, HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "11 readings in one request; the limit is 10"),
        ([{**READING, "torque_nm": True}], HTTPStatus.UNPROCESSABLE_ENTITY, "readings[0].torque_nm"),
        ([{**READING, "torque_nm": "40"}], HTTPStatus.UNPROCESSABLE_ENTITY, "readings[0].torque_nm"),
        ([{**READING, "tool_wear_min": 501}], HTTPStatus.UNPROCESSABLE_ENTITY, "less than or equal to 500"),
        ([{**READING, "air_temperature_k": float("nan")}], HTTPStatus.UNPROCESSABLE_ENTITY, "finite number"),
        (
            [READING, "reading"],
            HTTPStatus.UNPROCESSABLE_ENTITY,
            "readings[1]: Input should be a valid dictionary",
        ),
    ],
)
def test_bad_requests_are_rejected_with_status_and_reason(
    data: object, status: HTTPStatus, message: str
) -> None:
    with pytest.raises(RejectedRequest) as raised:
        parse_readings(data, max_readings=10)
    assert raised.value.status == status
    assert message in str(raised.value)


def test_many_bad_fields_are_summarised() -> None:
    bad = [{**READING, "torque_nm": -1.0} for _ in range(15)]
    with pytest.raises(RejectedRequest, match=r"readings\[9\]\.torque_nm.*; and 5 more$"):
        parse_readings(bad, max_readings=100)


def test_store_names_are_valid_bentoml_tags() -> None:
    assert store_name("MFD Failure/Classifier_v2") == "mfd-failure-classifier_v2"
    assert local_tag("mfd-failure-classifier", "12") == "mfd-failure-classifier:v12"


async def _echo(request: Request) -> PlainTextResponse:
    return PlainTextResponse(str(len(await request.body())))


def guarded_app(keys: tuple[str, ...], max_bytes: int) -> TestClient:
    app = Starlette(routes=[Route("/predict", _echo, methods=["POST"]), Route("/healthz", _echo)])
    return TestClient(ApiKeyMiddleware(BodyLimitMiddleware(app, max_bytes=max_bytes), keys=keys))


def test_guards_refuse_without_key_and_over_size_even_when_chunked() -> None:
    client = guarded_app(("secret",), max_bytes=100)
    ok = {"Authorization": "Bearer secret"}
    assert client.post("/predict", content=b"x" * 100, headers=ok).text == "100"
    assert client.post("/predict", content=b"x" * 10).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert client.post("/predict", content=b"x" * 101, headers=ok).status_code == 413
    chunks = iter([b"x" * 60, b"x" * 60])
    assert client.post("/predict", content=chunks, headers=ok).status_code == 413
    assert client.post("/predict", content=iter([b"x" * 50, b"x" * 50]), headers=ok).text == "100"


def test_only_reads_of_the_docs_pass_without_a_key() -> None:
    app = Starlette(
        routes=[
            Route("/", _echo, methods=["GET", "POST"]),
            Route("/docs.json", _echo),
            Route("/static_content/{name:path}", _echo),
            Route("/predict", _echo, methods=["POST"]),
        ]
    )
    client = TestClient(ApiKeyMiddleware(app, keys=("secret",)))
    for path in ("/", "/docs.json", "/static_content/swagger-ui.css"):
        assert client.get(path).status_code == 200, path
        assert client.head(path).status_code == 200, path
    assert client.post("/").status_code == 401
    assert client.post("/predict").status_code == 401
    assert not is_docs("GET", "/static_content/../predict")  # a client may send it un-normalised
    assert client.get("/docsXjson").status_code == 401


def test_no_keys_configured_means_open() -> None:
    assert guarded_app((), max_bytes=100).post("/predict", content=b"abc").text == "3"


async def _ok(scope: dict, receive: object, send: object) -> None:
    await PlainTextResponse("ok")(scope, receive, send)


async def _never(scope: dict, receive: object, send: object) -> None:
    await asyncio.sleep(3600)


def _live_timers() -> int:
    return sum(isinstance(o, asyncio.TimerHandle) and not o.cancelled() for o in gc.get_objects())


def test_request_timeout_leaves_no_timer_behind_and_still_answers_504() -> None:
    cancel_request_timers()

    async def scenario() -> tuple[list[str], int, httpx.Response]:
        fast = httpx.AsyncClient(
            transport=httpx.ASGITransport(TimeoutMiddleware(_ok, timeout=60)), base_url="http://t"
        )
        slow = httpx.AsyncClient(
            transport=httpx.ASGITransport(TimeoutMiddleware(_never, timeout=0.05)), base_url="http://t"
        )
        async with fast, slow:
            answers = [(await fast.get("/")).text for _ in range(20)]
            timers = _live_timers()
            return answers, timers, await slow.get("/")

    answers, timers, timed_out = asyncio.run(scenario())
    assert answers == ["ok"] * 20
    assert timers == 0
    assert timed_out.status_code == 504
    assert "Not able to process the request in 0.05 seconds" in timed_out.text


def test_json_output_keeps_the_schema_and_the_answer() -> None:
    @bentoml.service
    class Scores:
        @bentoml.api
        def predict(self, n: int) -> list[Prediction]:
            return []

    spec = Scores.apis["predict"].output_spec
    fast = json_output(spec)
    prediction = {
        "probability": 0.25,
        "label": 0,
        "threshold": 0.5,
        "machine_type": "L",
        "model_name": "m",
        "model_version": "3",
    }
    response = asyncio.run(fast.to_http_response([prediction], serde=None))
    assert fast.model_json_schema() == spec.model_json_schema()
    assert response.media_type == "application/json"
    assert json.loads(response.body) == [prediction]


class _CountingChampion:
    def __init__(self) -> None:
        self.refreshes = 0

    def refresh(self) -> bool:
        self.refreshes += 1
        return True


def test_a_reload_in_one_worker_makes_the_other_workers_recheck(tmp_path: Path) -> None:
    here, there = _CountingChampion(), _CountingChampion()
    pollers = [Poller(c, 0, tmp_path / "signal", check_s=0.01) for c in (here, there)]  # type: ignore[arg-type]
    for poller in pollers:
        poller.start()
    try:
        pollers[0].nudge()
        wait_until(lambda: there.refreshes == 1, "the other worker's check", 10)
        pollers[1].nudge()
        wait_until(lambda: here.refreshes == 1, "the first worker's check", 10)
        assert there.refreshes == 1  # its own nudge is no reason to check again
    finally:
        for poller in pollers:
            poller.stop()


def test_polling_checks_every_interval(tmp_path: Path) -> None:
    champion = _CountingChampion()
    poller = Poller(champion, 0.05, tmp_path / "signal", check_s=0.01)  # type: ignore[arg-type]
    poller.start()
    try:
        wait_until(lambda: champion.refreshes >= 3, "three polls", 10)
    finally:
        poller.stop()


class _ReloadRecorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.calls.append((self.path, self.headers.get("Authorization")))
        body = json.dumps({"model_version": "reloaded"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def fake_service() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ReloadRecorder)
    _ReloadRecorder.calls = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_champion_sensor_requests_a_bento_and_reloads_the_service(tmp_path: Path, fake_service: str) -> None:
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name="sensor-model")
    client: MlflowClient = tracking.client()
    client.create_registered_model("sensor-model")
    for _ in range(2):
        client.create_model_version("sensor-model", source=(tmp_path / "model").as_uri())
    client.set_registered_model_alias("sensor-model", CHAMPION, "1")
    sensor = build_champion_changed_sensor(Settings(service_url=fake_service, api_keys="k1,k2"))

    def evaluate(cursor: str | None) -> dg.SensorResult | dg.SkipReason:
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance, cursor=cursor, resources={"tracking": tracking}
            )
            return sensor(context)

    first = evaluate(None)
    assert isinstance(first, dg.SensorResult) and first.cursor == "1"
    assert [r.run_key for r in first.run_requests] == ["champion-sensor-model-v1"]
    assert _ReloadRecorder.calls == [("/reload", "Bearer k1")]
    assert isinstance(evaluate("1"), dg.SkipReason)
    client.set_registered_model_alias("sensor-model", CHAMPION, "2")
    second = evaluate("1")
    assert isinstance(second, dg.SensorResult) and second.cursor == "2"
    assert len(_ReloadRecorder.calls) == 2


def test_champion_sensor_skips_without_a_champion(tmp_path: Path) -> None:
    tracking = Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", model_name="nobody")
    sensor = build_champion_changed_sensor(Settings(service_url=None))
    with dg.instance_for_test() as instance:
        result = sensor(dg.build_sensor_context(instance=instance, resources={"tracking": tracking}))
    assert isinstance(result, dg.SkipReason) and "nobody@champion" in result.skip_message
