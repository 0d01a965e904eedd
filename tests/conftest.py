"""Real services for the suite: PostgreSQL, a SeaweedFS S3 server and an `mlflow server`, each started
once per session on 127.0.0.1 (lazily, only when a test asks), plus fresh per-test databases and buckets."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import start_run
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.modeling.model_io import log_failure_model
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer, Postgres, S3Server, mlflow_server, postgres_server, s3_server
from mfd.services.mosquitto import Mosquitto, mosquitto_server
from mfd.storage.objects import LocalObjects, S3Objects
from mfd_resources import Tracking

_names = itertools.count()

# Every process the suite starts inherits this marker (not MFD_*: tests strip those), so one that outlives its
# parent and is reparented to init is still found at the end by its /proc/<pid>/environ.
SESSION_MARKER = "PYTEST_MFD_SESSION"
os.environ[SESSION_MARKER] = uuid.uuid4().hex


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}x{next(_names)}"


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow(postgres: Postgres, s3: S3Server) -> Iterator[MlflowServer]:
    """An MLflow server with a PostgreSQL backend store and artifacts on the S3 server."""
    backend = postgres.create_database("mlflow").replace("+psycopg", "+psycopg2")
    bucket = s3.create_bucket("mlflow-artifacts")
    with mlflow_server(backend, f"s3://{bucket}/", s3) as server:
        yield server


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[Mosquitto]:
    """A Mosquitto broker with a password file and persistence (`mfd.services.mosquitto`)."""
    with mosquitto_server() as broker:
        yield broker


@pytest.fixture
def pg_url(postgres: Postgres) -> str:
    """A fresh, empty PostgreSQL database for one test."""
    return postgres.create_database(unique("t"))


@pytest.fixture
def bucket(s3: S3Server) -> str:
    """A fresh, empty bucket for one test."""
    return s3.create_bucket(unique("bucket-"))


@pytest.fixture(params=["sqlite", "postgres"])
def readings_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The readings database: the embedded SQLite twin and a real PostgreSQL, same test body."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'readings.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> LocalObjects | S3Objects:
    """The object store: the local-directory twin and a real S3 bucket, same test body."""
    if request.param == "local":
        return LocalObjects(tmp_path / "objects")
    server: S3Server = request.getfixturevalue("s3")
    return S3Objects(server.client(), request.getfixturevalue("bucket"))


@pytest.fixture(scope="module")
def champion(mlflow: MlflowServer, tmp_path_factory: pytest.TempPathFactory) -> Tracking:
    """A small HistGradientBoosting champion registered on the real MLflow server; local model copies go
    to a temporary MFD_HOME, never the repository's .mfd/."""
    tracking = Tracking(
        tracking_uri=mlflow.tracking_uri,
        experiment_name="detection-test",
        model_name=unique("m-"),
        home=str(tmp_path_factory.mktemp("home")),
    )
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=60, random_state=0))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    with start_run(experiment_id=tracking.experiment_id()):
        _, version = log_failure_model(pipeline, ai4i, registered_name=tracking.model_name, threshold=0.5)
    tracking.client().set_registered_model_alias(tracking.model_name, "champion", version.version)
    return tracking


def _live_processes() -> dict[int, tuple[int, Path]]:
    """pid -> (parent pid, /proc entry) of every live (not zombie) process."""
    live: dict[int, tuple[int, Path]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            live[int(entry.name)] = (int(ppid), entry)
    return live


def _marked(entry: Path, marker: bytes) -> bool:
    try:
        return marker in (entry / "environ").read_bytes().split(b"\0")
    except OSError:  # gone meanwhile, or not ours to read
        return False


def stray_processes(root: int, marker: str) -> dict[int, str]:
    """pid -> command line of every live process descended from `root` or started with `marker`
    (NAME=value) in its environment: the orphans reparented to init as well as the children still attached."""
    live = _live_processes()
    found = {pid for pid, (_, entry) in live.items() if pid != root and _marked(entry, marker.encode())}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in live.items() if ppid in frontier}
        found |= frontier
    strays = {}
    for pid in sorted(found):
        try:
            strays[pid] = (live[pid][1] / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()[:200]
        except OSError:
            continue
    return strays


@pytest.fixture(scope="session", autouse=True)
def no_process_left_behind() -> Iterator[None]:
    """After the session, once every service fixture has stopped, no process the tests started is alive,
    attached or orphaned: survivors are listed, killed, and fail the session."""
    yield
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}"
    for _ in range(20):  # a stopped server may take a moment to exit
        stray = stray_processes(os.getpid(), marker)
        if not stray:
            return
        time.sleep(0.5)
    for pid in stray:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    listed = "\n".join(f"{pid} {command}" for pid, command in stray.items())
    pytest.fail(f"processes left running after the tests (now killed):\n{listed}", pytrace=False)


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """The production stack (`make stack`) in a temporary directory on free ports, once per session, for
    tests/e2e; stopped afterwards. See tests/e2e/stack_helpers.py."""
    from stack_helpers import started_stack  # tests/e2e, on sys.path once its test modules are collected

    with started_stack(tmp_path_factory) as running:
        yield running


@pytest.fixture(scope="session")
def pipeline(running_stack: object) -> object:
    """Generated CSV files -> sensors -> a champion -> every reading scored, once per session, on the stack."""
    from stack_helpers import run_pipeline

    return run_pipeline(running_stack)
