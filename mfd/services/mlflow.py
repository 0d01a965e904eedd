"""A throw-away `mlflow server` (PostgreSQL backend store, S3 artifacts) on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfd.services.processes import free_port, stop_process_group, wait_until
from mfd.services.s3 import S3Server


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str
    process: subprocess.Popen


@contextmanager
def mlflow_server(
    backend_store_uri: str, artifacts_destination: str, s3: S3Server | None = None
) -> Iterator[MlflowServer]:
    """`mlflow server` with the given backend store (PostgreSQL) and artifact destination (s3://...)."""
    root = Path(tempfile.mkdtemp(prefix="mfd-mlflow-"))
    port = free_port()
    env = dict(os.environ)
    if s3 is not None:
        env.update(
            MLFLOW_S3_ENDPOINT_URL=s3.endpoint_url,
            AWS_ACCESS_KEY_ID=s3.access_key,
            AWS_SECRET_ACCESS_KEY=s3.secret_key,
            AWS_DEFAULT_REGION=s3.region,
        )
    mlflow_bin = shutil.which("mlflow") or str(Path(sys.executable).with_name("mlflow"))
    cmd = [
        mlflow_bin,
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        artifacts_destination,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    log = root / "mlflow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200,
            "mlflow server",
            timeout=120,
            log=log,
        )
        yield MlflowServer(uri, proc)
    finally:
        stop_process_group(proc)
        shutil.rmtree(root, ignore_errors=True)
