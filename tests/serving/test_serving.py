"""The champion as a BentoML service: a real `bentoml serve` on 127.0.0.1 against the real MLflow server."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import pytest
from conftest import unique
from forwarder import Forwarder
from mlflow import set_experiment, start_run
from mlflow.tracking import MlflowClient
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.pipeline import Pipeline

from mfd.modeling.model_io import CHAMPION, log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer, free_port, stop_process_group, wait_until
from mfd.storage.tracking import connect

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
KEYS = ("key-one-7f3a", "key-two-91bc")
AUTH = {"Authorization": f"Bearer {KEYS[1]}"}
THRESHOLD = 0.35
THRESHOLDS = {"H": 0.6, "M": 0.2}  # version 1's cost-optimal thresholds per type; L keeps THRESHOLD
WORKERS = 2  # bento/service.py
READING = {
    "machine_type": "L",
    "air_temperature_k": 298.1,
    "process_temperature_k": 308.6,
    "rotational_speed_rpm": 1551.0,
    "torque_nm": 42.8,
    "tool_wear_min": 108.0,
}


@dataclass(frozen=True)
class Registered:
    name: str
    tracking_uri: str
    pipeline: Pipeline
    versions: tuple[str, str]


@dataclass(frozen=True)
class Service:
    url: str
    log: Path

    def client(self, **kwargs: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


@pytest.fixture(scope="module")
def bentoml_home() -> Iterator[Path]:
    """One BentoML store for the module's servers and in-process builds (never ~/bentoml)."""
    home = Path(tempfile.mkdtemp(prefix="mfd-bentoml-"))
    previous = os.environ.get("BENTOML_HOME")
    os.environ["BENTOML_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("BENTOML_HOME", None)
    else:
        os.environ["BENTOML_HOME"] = previous
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def registered(mlflow: MlflowServer) -> Registered:
    """A small HistGradientBoosting pipeline on AI4I, logged twice: version 1 is champion, 2 waits."""
    client = connect(mlflow.tracking_uri)
    df = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=30, random_state=0))
    pipeline.fit(df[list(MODEL_INPUT_COLUMNS)], df[LABEL_COLUMN].astype(int))
    name = unique("serving-")
    versions = []
    set_experiment(unique("serving-"))
    for _ in range(2):
        with start_run():
            _, mv = log_failure_model(pipeline, df, registered_name=name, threshold=THRESHOLD)
        versions.append(str(mv.version))
    client.set_model_version_tag(name, versions[0], "thresholds", json.dumps(THRESHOLDS))
    client.set_registered_model_alias(name, CHAMPION, versions[0])
    return Registered(name, mlflow.tracking_uri, pipeline, (versions[0], versions[1]))


def start_serving(env: dict[str, str], log: Path, port: int) -> subprocess.Popen:
    cmd = [str(Path(sys.executable).with_name("bentoml")), "serve", "bento.service:MachineFailureService"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(
            cmd,
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = start_serving(env, log, port)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: httpx.get(f"{url}/readyz", timeout=2).status_code == 200, "bentoml serve", 180, log
        )
    except BaseException:
        stop_process_group(proc, timeout=30)
        raise
    return proc, url


def service_env(
    registered: Registered, bentoml_home: Path, tmp: Path, tracking_uri: str, reload_interval_s: str = "0"
) -> dict[str, str]:
    return {
        "BENTOML_HOME": str(bentoml_home),
        "MFD_DEPLOYMENT": "production",
        "MFD_HOME": str(tmp / "mfd-home"),
        "MFD_MLFLOW_TRACKING_URI": tracking_uri,
        "MFD_MODEL_NAME": registered.name,
        "MFD_API_KEYS": ",".join(KEYS),
        "MFD_RELOAD_INTERVAL_S": reload_interval_s,
        # Production settings are checked whole when they are read; the service itself only uses MLflow.
        "MFD_DATABASE_URL": "postgresql+psycopg://unused@127.0.0.1:9/unused",
        "MFD_S3_BUCKET": "unused",
        "MFD_S3_ENDPOINT_URL": "http://127.0.0.1:9",
    }


@pytest.fixture(scope="module")
def registry(registered: Registered) -> Iterator[Forwarder]:
    """The registry as `service` sees it: closing this forwarder takes it down, `open()` brings it back."""
    forwarder = Forwarder(registered.tracking_uri)
    yield forwarder
    forwarder.close()


@pytest.fixture(scope="module")
def service_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The temp directory whose `mfd-home/` holds `service`'s local model copies."""
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def service(
    registered: Registered, registry: Forwarder, bentoml_home: Path, service_home: Path
) -> Iterator[Service]:
    """The service with polling off: only `POST /reload` moves its workers to a new champion."""
    proc, url = serve(
        service_env(registered, bentoml_home, service_home, registry.uri), service_home / "serve.log"
    )
    yield Service(url, service_home / "serve.log")
    stop_process_group(proc, timeout=30)


def every_worker(service: Service) -> dict[int, dict[str, object]]:
    """`/status` of each worker, by pid: one new connection per request, so the kernel picks the worker."""
    statuses: dict[int, dict[str, object]] = {}
    for _ in range(50):
        with service.client() as client:
            status = client.get("/status", headers=AUTH).json()
        statuses[status["worker_pid"]] = status
        if len(statuses) == WORKERS:
            return statuses
    raise AssertionError(f"only workers {sorted(statuses)} answered")


def served_versions(service: Service) -> set[object]:
    return {status["model_version"] for status in every_worker(service).values()}


def predict(service: Service, payload: object, **kwargs: object) -> httpx.Response:
    with service.client() as client:
        return client.post("/predict", json=payload, headers=AUTH, **kwargs)


def counter(service: Service, metric: str, version: str) -> float:
    text = httpx.get(f"{service.url}/metrics", headers=AUTH).text
    prefix = f'{metric}_total{{model_name="'
    for line in text.splitlines():
        if line.startswith(prefix) and f'model_version="{version}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_predicts_each_reading_with_the_champion(service: Service, registered: Registered) -> None:
    readings = [READING, {**READING, "machine_type": "H", "torque_nm": 68.0, "tool_wear_min": 230.0}]
    response = predict(service, {"readings": readings})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = registered.pipeline.predict_proba(pd.DataFrame(readings))[:, 1]
    assert [round(p["probability"], 9) for p in body] == [round(float(p), 9) for p in expected]
    assert [(p["machine_type"], p["threshold"]) for p in body] == [("L", THRESHOLD), ("H", THRESHOLDS["H"])]
    for p in body:
        assert p["label"] == int(p["probability"] >= p["threshold"])
        assert (p["model_name"], p["model_version"]) == (registered.name, "1")


def test_explain_gives_shap_features_and_the_nearest_rule(service: Service, registered: Registered) -> None:
    strained = {**READING, "machine_type": "M", "torque_nm": 55.0, "tool_wear_min": 235.0}  # 12,925 min.Nm
    with service.client() as client:
        response = client.post("/explain", json={"readings": [READING, strained]}, headers=AUTH)
        unauthenticated = client.post("/explain", json={"readings": [READING]})
        too_many = client.post("/explain", json={"readings": [READING] * 101}, headers=AUTH)
    assert response.status_code == 200, response.text
    plain, explained = response.json()
    assert (explained["machine_type"], explained["threshold"]) == ("M", THRESHOLDS["M"])
    assert explained["nearest_rule"]["rule"] == "overstrain" and explained["nearest_rule"]["fires"]
    assert explained["nearest_rule"]["margin"] == pytest.approx((12_000 - 12_925) / 12_000, abs=1e-3)
    assert (explained["explainer"], explained["shap_output"]) == ("shap tree", "log-odds")
    top = explained["top_features"]
    assert 1 <= len(top) <= 3 and top[0]["attribution"] >= top[-1]["attribution"] > 0
    expected = registered.pipeline.predict_proba(pd.DataFrame([READING, strained]))[:, 1]
    assert [round(p["probability"], 9) for p in (plain, explained)] == [round(float(p), 9) for p in expected]
    assert unauthenticated.status_code == 401
    assert too_many.status_code == 413 and "the limit is 100" in too_many.text


def test_every_worker_loaded_the_model_from_the_registry(service: Service, registered: Registered) -> None:
    # The workers start together with no local copy: one copies the version while the other waits for it.
    for status in every_worker(service).values():
        assert status["source"] == "registry"
        assert status["model_name"] == registered.name
        assert status["registry_error"] is None


def bad(reading_change: dict[str, object], drop: tuple[str, ...] = ()) -> dict[str, object]:
    reading = {k: v for k, v in READING.items() if k not in drop}
    return {"readings": [READING, {**reading, **reading_change}]}


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bad({}, drop=("torque_nm",)), "readings[1].torque_nm: Field required"),
        (bad({"humidity": 0.4}), "readings[1].humidity: Extra inputs are not permitted"),
        (bad({"torque": 40.0}, drop=("torque_nm",)), "readings[1].torque: Extra inputs are not permitted"),
        (bad({"torque_nm": "high"}), "readings[1].torque_nm: Input should be a valid number"),
        (bad({"tool_wear_min": [1]}), "readings[1].tool_wear_min: Input should be a valid number"),
        (
            bad({"air_temperature_k": 1000.0}),
            "readings[1].air_temperature_k: Input should be less than or equal",
        ),
        (
            bad({"rotational_speed_rpm": -5.0}),
            "readings[1].rotational_speed_rpm: Input should be greater than",
        ),
        (bad({"machine_type": "X"}), "readings[1].machine_type: Input should be 'L', 'M' or 'H'"),
        (bad({"machine_type": None}), "readings[1].machine_type"),
        ({"readings": []}, "readings is empty"),
        ({"readings": {"machine_type": "L"}}, "readings must be a list"),
        ({"readings": [READING] * 10_001}, "the limit is 10000"),
    ],
    ids=[
        "missing-field",
        "extra-field",
        "misspelled-field",
        "string-for-number",
        "list-for-number",
        "too-hot",
        "negative-speed",
        "unknown-machine-type",
        "null-machine-type",
        "empty-list",
        "not-a-list",
        "too-many-readings",
    ],
)
def test_bad_readings_are_refused_naming_the_field(service: Service, payload: object, expected: str) -> None:
    response = predict(service, payload)
    assert response.status_code == (413 if "limit" in expected else 422), response.text
    assert expected in response.text


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_refused(service: Service, token: str) -> None:
    body = json.dumps({"readings": [READING]}).replace("42.8", token)
    with service.client() as client:
        response = client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert "readings[0].torque_nm: Input should be a finite number" in response.text


@pytest.mark.parametrize(
    "body", [b'{"readings": [{"machine_type": "L",', b'{"readingz": []}', b"[1, 2]", b""]
)
def test_malformed_requests_get_400(service: Service, body: bytes) -> None:
    with service.client() as client:
        response = client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400


def test_100k_row_payload_gets_413_without_being_read(service: Service) -> None:
    body = json.dumps({"readings": [READING] * 100_000}).encode()
    assert len(body) > 10_000_000
    with service.client() as client:
        response = client.post("/predict", content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert "MFD_MAX_REQUEST_BYTES" in response.json()["error"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": KEYS[0]}])
def test_routes_need_a_key_and_refusals_never_reach_the_model(
    service: Service, headers: dict[str, str]
) -> None:
    before = counter(service, "mfd_predictions", "1")
    with service.client() as client:
        assert client.post("/predict", json={"readings": [READING]}, headers=headers).status_code == 401
        assert client.post("/reload", json={}, headers=headers).status_code == 401
        assert client.get("/status", headers=headers).status_code == 401
        assert client.get("/metrics", headers=headers).status_code == 401
        assert client.get("/nowhere", headers=headers).status_code == 401
        assert client.post("/", json={}, headers=headers).status_code == 401
        for probe in ("/healthz", "/livez", "/readyz"):
            assert client.get(probe, headers=headers).status_code == 200
    assert counter(service, "mfd_predictions", "1") == before
    assert KEYS[0] not in service.log.read_text() and KEYS[1] not in service.log.read_text()


def test_the_swagger_page_and_its_spec_are_open_while_the_routes_it_shows_need_a_key(
    service: Service,
) -> None:
    with service.client() as client:
        page = client.get("/")
        assert page.status_code == 200 and "swagger-initializer.js" in page.text
        for asset in ("swagger-initializer.js", "swagger-ui-bundle.js", "swagger-ui.css", "index.css"):
            assert client.get(f"/static_content/{asset}").status_code == 200, asset
        for spec in ("/docs.json", "/schema.json"):
            assert client.get(spec).status_code == 200, spec
        assert {"/predict", "/explain", "/reload"} <= set(client.get("/docs.json").json()["paths"])
        assert client.post("/predict", json={"readings": [READING]}).status_code == 401
        assert client.get("/docs.json", headers=AUTH).status_code == 200


def test_production_without_keys_refuses_to_start(registered: Registered, tmp_path: Path) -> None:
    # Its own BENTOML_HOME: `bentoml serve` clears the metrics directory of the home it starts in.
    env = service_env(registered, tmp_path / "bentoml", tmp_path, registered.tracking_uri)
    env["MFD_API_KEYS"] = ""
    log = tmp_path / "serve.log"
    proc = start_serving(env, log, free_port())
    try:
        returncode = proc.wait(timeout=120)
    finally:
        stop_process_group(proc, timeout=30)
    output = log.read_text().strip()
    assert returncode != 0, output
    assert output.splitlines()[-1] == (
        "error: MFD_DEPLOYMENT=production needs MFD_API_KEYS (comma-separated keys): refusing to serve "
        "/predict and /reload without authentication"
    )
    assert "Traceback" not in output and "Starting production" not in output


def test_metrics_count_predictions_and_failures_by_version(service: Service) -> None:
    before = counter(service, "mfd_predictions", "1")
    failures_before = counter(service, "mfd_predicted_failures", "1")
    failing = {
        **READING,
        "machine_type": "L",
        "torque_nm": 70.0,
        "tool_wear_min": 240.0,
        "rotational_speed_rpm": 1200.0,
    }
    response = predict(service, {"readings": [READING, failing, failing]})
    assert response.status_code == 200
    labels = sum(p["label"] for p in response.json())
    assert counter(service, "mfd_predictions", "1") == before + 3
    assert counter(service, "mfd_predicted_failures", "1") == failures_before + labels


@pytest.fixture(scope="module")
def fallback_service(
    service: Service,
    registered: Registered,
    registry: Forwarder,
    bentoml_home: Path,
    service_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """A second server on `service`'s MFD_HOME, started while the registry answers nothing: `service`
    already left a local copy there. The registry is back once it has started (its polling is off)."""
    log = tmp_path_factory.mktemp("fallback") / "serve.log"
    registry.close()
    try:
        proc, url = serve(service_env(registered, bentoml_home, service_home, registry.uri), log)
    finally:
        registry.open()
    yield Service(url, log)
    stop_process_group(proc, timeout=30)


def test_registry_down_at_start_serves_the_local_copy(
    fallback_service: Service, registered: Registered
) -> None:
    status = httpx.get(f"{fallback_service.url}/status", headers=AUTH).json()
    assert (status["source"], status["model_version"]) == ("local copy", registered.versions[0])
    assert "ServiceUnavailable" in status["registry_error"]
    response = predict(fallback_service, {"readings": [READING]})
    assert response.status_code == 200 and response.json()[0]["model_version"] == registered.versions[0]
    assert "serving local copy" in fallback_service.log.read_text()


def test_champion_changed_under_load_swaps_without_errors(service: Service, registered: Registered) -> None:
    old, new = registered.versions
    statuses: Counter[int] = Counter()
    versions: Counter[str] = Counter()
    stop_load = threading.Event()

    def load() -> None:
        with service.client() as client:
            while not stop_load.is_set():
                response = client.post("/predict", json={"readings": [READING]}, headers=AUTH)
                statuses[response.status_code] += 1
                if response.status_code == 200:
                    versions[response.json()[0]["model_version"]] += 1

    workers = [threading.Thread(target=load) for _ in range(8)]
    for w in workers:
        w.start()
    try:
        wait_until(lambda: versions[old] >= 50, "load on the old champion", 60)
        MlflowClient(registered.tracking_uri).set_registered_model_alias(registered.name, CHAMPION, new)
        # A reload whose registry check fails under the load keeps the old model and says why
        # (registry_error): ask again until the registry answered.
        answers: list[dict] = []

        def reloaded_to_new() -> bool:
            answers.append(httpx.post(f"{service.url}/reload", json={}, headers=AUTH, timeout=60).json())
            return answers[-1]["model_version"] == new

        wait_until(reloaded_to_new, f"/reload swapping to version {new}", 60)
        assert len(answers) == 1 or all(a.get("registry_error") for a in answers[:-1]), answers
        # Polling is off: the worker that answered the reload tells the others.
        wait_until(lambda: served_versions(service) == {new}, "every worker on the new champion", 30)
        seen = versions[new]
        wait_until(lambda: versions[new] >= seen + 50, "load on the new champion", 60)
    finally:
        stop_load.set()
        for w in workers:
            w.join()
    assert set(statuses) == {200}, statuses
    assert versions[old] >= 50 and versions[new] >= 50


@pytest.fixture(scope="module")
def polling_service(
    registered: Registered, bentoml_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    """A second server that checks the alias every second."""
    tmp = tmp_path_factory.mktemp("polling")
    env = service_env(registered, bentoml_home, tmp, registered.tracking_uri, reload_interval_s="1")
    proc, url = serve(env, tmp / "serve.log")
    yield Service(url, tmp / "serve.log")
    stop_process_group(proc, timeout=30)


def test_polling_follows_the_alias_without_a_reload_call(
    polling_service: Service, registered: Registered
) -> None:
    (serving,) = served_versions(polling_service)
    other = next(v for v in registered.versions if v != serving)
    MlflowClient(registered.tracking_uri).set_registered_model_alias(registered.name, CHAMPION, other)
    wait_until(lambda: served_versions(polling_service) == {other}, "every worker polling the alias", 30)
    for _ in range(2 * WORKERS):
        assert predict(polling_service, {"readings": [READING]}).json()[0]["model_version"] == other


def test_a_stale_store_copy_under_the_champions_tag_is_replaced(
    registered: Registered, bentoml_home: Path
) -> None:
    """Another registry's (or an older run's) model under the same name and version in the BentoML store is a
    stale cache entry: the bento packs a fresh copy of this registry's version, checked by its sha256 tags."""
    import bentoml

    from mfd.modeling.model_io import expected_digests, verify_artifact
    from mfd.serving.packaging import BENTO_MLFLOW_FOLDER, build_champion_bento, local_tag

    tag = local_tag(registered.name, registered.versions[0])
    legacy = Path(__file__).parents[1] / "data" / "legacy_models" / "rf"
    with contextlib.suppress(bentoml.exceptions.NotFound):
        bentoml.models.delete(tag)
    bentoml.mlflow.import_model(tag, str(legacy))  # another model, same tag
    build = build_champion_bento(registered.tracking_uri, registered.name)
    copy = bentoml.models.get(build.local_model_tag)
    mv = connect(registered.tracking_uri).get_model_version(registered.name, registered.versions[0])
    verify_artifact(
        Path(copy.path_of(BENTO_MLFLOW_FOLDER)), expected_digests(mv), registered.name, mv.version
    )


def test_champion_bento_builds_a_bento_for_the_champion(registered: Registered, bentoml_home: Path) -> None:
    from mfd_assets.serving import champion_bento
    from mfd_resources import Tracking

    result = dg.materialize(
        [champion_bento],
        resources={"tracking": Tracking(tracking_uri=registered.tracking_uri, model_name=registered.name)},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("champion_bento")[0].metadata
    tag = metadata["bento_tag"].value
    assert tag.startswith("machine_failure:")
    bento_yaml = (bentoml_home / "bentos" / tag.replace(":", "/") / "bento.yaml").read_text()
    assert f"model_version: '{registered.versions[0]}'" in bento_yaml
    assert metadata["local_model_tag"].value in bento_yaml
