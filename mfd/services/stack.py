"""The production stack on one machine: `make stack` / `make stop` (`python -m mfd.services.stack up|down`).

In: binaries on the machine (PostgreSQL, `weed`, mlflow, dagster, bentoml) and `deploy/Procfile`. Out: every
service on 127.0.0.1 under one honcho supervisor, state kept under `.mfd/stack/` across restarts:

    postgres           .mfd/stack/pg/data      readings (db mfd), MLflow (db mlflow), Dagster (db dagster)
    s3 (SeaweedFS)     .mfd/stack/s3           buckets mfd (incoming/, processed/, rejected/, dagster/)
                                               and mfd-mlflow (MLflow artifacts)
    mlflow             PostgreSQL backend, artifacts proxied to s3://mfd-mlflow/
    dagster-code       the code location (mfd_assets.definitions), loaded once, as a gRPC server
    dagster-webserver  DAGSTER_HOME .mfd/stack/dagster (deploy/dagster/dagster.yaml: PostgreSQL storage)
    dagster-daemon     the sensors and the run queue
    bento              `bentoml serve` of the champion, started once a champion exists

Each Procfile line is `python -m mfd.services.stack run <service>`: it waits for what the service needs
(databases, buckets, a champion), then runs it and restarts it if it dies, unless the service is held
(`hold <service>`: the fault tests stop a service that way and `release` it). Ports are fixed (Dagster
3000, Bento 3001, MLflow 5000, PostgreSQL 5433, S3 8333) and each can be moved with MFD_STACK_PORT_<NAME>;
MFD_STACK_HOME moves the state.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

from mfd.errors import MfdError
from mfd.services.postgres import as_postgres_user, pg_binary
from mfd.services.processes import wait_until
from mfd.services.s3 import weed_binary

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "deploy" / "Procfile"
DAGSTER_DEPLOY = REPO / "deploy" / "dagster"
INSTANCE_YAML = DAGSTER_DEPLOY / "dagster.yaml"
CODE_SERVER = REPO / "deploy" / "dagster" / "code_server.py"
AFTER_CODE_SERVER = REPO / "deploy" / "dagster" / "after_code_server.py"
SERVICES = ("postgres", "s3", "mlflow", "dagster-code", "dagster-webserver", "dagster-daemon", "bento")
BUCKET = "mfd"
MLFLOW_BUCKET = "mfd-mlflow"
DATABASES = ("mfd", "mlflow", "dagster")
PG_USER = "mfd"
# The stack's credentials, generated on its first start into <root>/secrets.json (mode 0600): no two stacks
# share a key, and only the stack's owner reads them (`python -m mfd.services.stack env`).
SECRET_NAMES = ("s3_access_key", "s3_secret_key", "api_key", "pg_password")
STOP_WAIT_S = 30.0  # a child runs in its own session: honcho's SIGKILL of its supervisor never reaches it


@dataclass(frozen=True)
class Ports:
    dagster: int = 3000
    bento: int = 3001
    mlflow: int = 5000
    postgres: int = 5433
    s3: int = 8333
    weed_master: int = 9333
    weed_volume: int = 8082
    weed_filer: int = 8888
    dagster_code: int = 4266

    @classmethod
    def from_env(cls) -> Ports:
        """Defaults, each overridden by MFD_STACK_PORT_<NAME> (e.g. MFD_STACK_PORT_DAGSTER=3100)."""
        given = {f.name: os.environ.get(f"MFD_STACK_PORT_{f.name.upper()}") for f in fields(cls)}
        return cls(**{name: int(value) for name, value in given.items() if value})

    def env(self) -> dict[str, str]:
        return {f"MFD_STACK_PORT_{f.name.upper()}": str(getattr(self, f.name)) for f in fields(self)}


@dataclass(frozen=True)
class Stack:
    root: Path
    ports: Ports
    model_name: str = "mfd-failure-classifier"

    @classmethod
    def from_env(cls) -> Stack:
        root = Path(os.environ.get("MFD_STACK_HOME") or REPO / ".mfd" / "stack").resolve()
        return cls(root, Ports.from_env(), os.environ.get("MFD_MODEL_NAME") or cls.model_name)

    # -- where things live -------------------------------------------------------------------------------
    @property
    def secrets_file(self) -> Path:
        return self.root / "secrets.json"

    def secrets(self) -> dict[str, str]:
        """The stack's keys and passwords: read from `secrets_file`, generated there on first use (0600)."""
        path = self.secrets_file
        if path.exists():
            return json.loads(path.read_text())
        path.parent.mkdir(parents=True, exist_ok=True)
        made = {name: secrets.token_hex(8 if name == "s3_access_key" else 24) for name in SECRET_NAMES}
        made["s3_access_key"] = f"mfd{made['s3_access_key']}"
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        with os.fdopen(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
            json.dump(made, out)
        try:
            os.link(temporary, path)  # the first writer wins; a concurrent `up` reads its secrets
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
        return json.loads(path.read_text())

    @property
    def pg_data(self) -> Path:
        return self.root / "pg" / "data"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log(self) -> Path:
        return self.root / "stack.log"

    def pg_url(self, dbname: str, driver: str = "psycopg", password: bool = True) -> str:
        """SQLAlchemy URL of a stack database, with the password unless `password=False` (for display)."""
        secret = f":{self.secrets()['pg_password']}" if password else ""
        return f"postgresql+{driver}://{PG_USER}{secret}@127.0.0.1:{self.ports.postgres}/{dbname}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    def urls(self) -> dict[str, str]:
        return {
            "Dagster UI": f"http://127.0.0.1:{self.ports.dagster}",
            "Dagster GraphQL": f"http://127.0.0.1:{self.ports.dagster}/graphql",
            "MLflow": f"http://127.0.0.1:{self.ports.mlflow}",
            "Bento (champion)": f"http://127.0.0.1:{self.ports.bento}",
            "S3 (SeaweedFS)": self.s3_url,
            "PostgreSQL": self.pg_url("mfd", password=False),
        }

    def env(self) -> dict[str, str]:
        """The variables every service and the code location get: the same as pointing mfd at a real
        MinIO, PostgreSQL and MLflow (docs/operating.md)."""
        keys = self.secrets()
        return {
            "MFD_STACK_HOME": str(self.root),
            **self.ports.env(),
            "MFD_DEPLOYMENT": "production",
            "MFD_HOME": str(self.root / "home"),
            "MFD_DATABASE_URL": self.pg_url("mfd"),
            "MFD_S3_BUCKET": BUCKET,
            "MFD_S3_ENDPOINT_URL": self.s3_url,
            "MFD_S3_ACCESS_KEY_ID": keys["s3_access_key"],
            "MFD_S3_SECRET_ACCESS_KEY": keys["s3_secret_key"],
            "MFD_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.ports.mlflow}",
            "MFD_MODEL_NAME": self.model_name,
            "MFD_SERVICE_URL": f"http://127.0.0.1:{self.ports.bento}",
            "MFD_API_KEYS": os.environ.get("MFD_API_KEYS") or keys["api_key"],
            "DAGSTER_HOME": str(self.dagster_home),
            "MFD_DAGSTER_PG_HOST": "127.0.0.1",
            "MFD_DAGSTER_PG_PORT": str(self.ports.postgres),
            "MFD_DAGSTER_PG_USER": PG_USER,
            "MFD_DAGSTER_PG_PASSWORD": keys["pg_password"],
            "PGHOST": "127.0.0.1",  # pg_dump, psql: the stack's server without flags
            "PGPORT": str(self.ports.postgres),
            "PGUSER": PG_USER,
            "PGPASSWORD": keys["pg_password"],
            "MFD_DAGSTER_PG_DB": "dagster",
            "BENTOML_HOME": str(self.root / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": keys["s3_access_key"],
            "AWS_SECRET_ACCESS_KEY": keys["s3_secret_key"],
            "AWS_DEFAULT_REGION": "us-east-1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            # deploy/dagster/stack_run_launcher.py, the instance's run launcher, for every Dagster process
            "PYTHONPATH": os.pathsep.join(filter(None, [str(DAGSTER_DEPLOY), os.environ.get("PYTHONPATH")])),
        }

    # -- readiness checks ---------------------------------------------------------------------------------
    def s3_client(self):  # noqa: ANN201 - boto3 client
        import boto3
        from botocore.config import Config

        keys = self.secrets()
        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=keys["s3_access_key"],
            aws_secret_access_key=keys["s3_secret_key"],
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def pg_connect(self, **kwargs: object):  # noqa: ANN201 - a psycopg connection
        import psycopg

        password = self.secrets()["pg_password"]
        return psycopg.connect(
            host="127.0.0.1", port=self.ports.postgres, user=PG_USER, password=password, **kwargs
        )

    def pg_ready(self) -> bool:
        with self.pg_connect(dbname="postgres", connect_timeout=2) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    def s3_ready(self) -> bool:
        self.s3_client().list_buckets()
        return True

    def mlflow_ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.ports.mlflow}/health")

    def code_ready(self) -> bool:
        """The code server answers gRPC health checks (it binds its port once the location is loaded)."""
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(f"127.0.0.1:{self.ports.dagster_code}") as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=2
            )
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def dagster_ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.ports.dagster}/server_info")

    def daemon_ready(self) -> bool:
        """The webserver reports the sensor daemon's heartbeat as healthy."""
        query = '{ instance { daemonHealth { daemonStatus(daemonType: "SENSOR") { healthy } } } }'
        body = json.dumps({"query": query}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports.dagster}/graphql",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data = json.load(response)
        return bool(data["data"]["instance"]["daemonHealth"]["daemonStatus"]["healthy"])

    def bento_ready(self) -> bool:
        return _http_ok(f"http://127.0.0.1:{self.ports.bento}/readyz")

    def champion_version(self) -> str | None:
        """The registry's champion version, or None (none yet, or MLflow unreachable)."""
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.ports.mlflow}/api/2.0/mlflow/registered-models/alias"
            f"?name={self.model_name}&alias=champion"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(json.load(response)["model_version"]["version"])
        except Exception:  # noqa: BLE001 - no champion, no model, or MLflow down: none to serve
            return None

    def checks(self) -> dict[str, Callable[[], bool]]:
        return {
            "postgres": self.pg_ready,
            "s3": self.s3_ready,
            "mlflow": self.mlflow_ready,
            "dagster-code": self.code_ready,
            "dagster-webserver": self.dagster_ready,
            "dagster-daemon": self.daemon_ready,
            "bento": self.bento_ready,
        }

    def health(self) -> dict[str, bool]:
        out = {}
        for name, check in self.checks().items():
            try:
                out[name] = bool(check())
            except Exception:  # noqa: BLE001 - down
                out[name] = False
        return out


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


# -- one service: prepare, then supervise ---------------------------------------------------------------


def _ensure_databases(stack: Stack) -> None:
    from psycopg import errors

    wait_until(stack.pg_ready, "stack PostgreSQL", timeout=120)
    with stack.pg_connect(dbname="postgres", autocommit=True) as conn:
        have = {row[0] for row in conn.execute("SELECT datname FROM pg_database")}
        for name in DATABASES:
            if name not in have:
                try:
                    conn.execute(f'CREATE DATABASE "{name}"')
                except (errors.DuplicateDatabase, errors.UniqueViolation):  # another wrapper made it first
                    pass


def _ensure_buckets(stack: Stack) -> None:
    wait_until(stack.s3_ready, "stack S3 server", timeout=120)
    client = stack.s3_client()

    def made() -> bool:
        have = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        for name in (BUCKET, MLFLOW_BUCKET):
            if name not in have:
                client.create_bucket(Bucket=name)
        return True

    wait_until(made, "stack S3 buckets", timeout=60)


def _initdb(stack: Stack) -> None:
    """First start: a cluster in .mfd/stack/pg/data owned by the unprivileged `postgres` user when root."""
    initdb = pg_binary("initdb")
    if not initdb:
        raise MfdError("initdb not found: install PostgreSQL server binaries (make deps does)")
    pg_root = stack.pg_data.parent
    (pg_root / "sock").mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for path in (pg_root, pg_root / "sock"):
            shutil.chown(path, "postgres")
    if (stack.pg_data / "PG_VERSION").exists():
        return
    # The password reaches initdb in a file only its user reads, removed at once; scram-sha-256 on every
    # connection (local socket included), none trusted.
    pwfile = pg_root / "pwfile"
    with os.fdopen(os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        out.write(stack.secrets()["pg_password"] + "\n")
    if os.geteuid() == 0:
        shutil.chown(pwfile, "postgres")
    cmd = [initdb, "-D", str(stack.pg_data), "-U", PG_USER, "--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        made = subprocess.run(as_postgres_user([*cmd, "-E", "UTF8"]), capture_output=True, text=True)
    finally:
        pwfile.unlink(missing_ok=True)
    if made.returncode:
        raise MfdError(f"initdb into {stack.pg_data} failed: {made.stderr.strip()}")


def _s3_config(stack: Stack) -> Path:
    """SeaweedFS's identities file: the stack's keys, readable by its owner only."""
    config = stack.root / "s3.json"
    keys = stack.secrets()
    identity = {
        "name": "mfd",
        "credentials": [{"accessKey": keys["s3_access_key"], "secretKey": keys["s3_secret_key"]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    with os.fdopen(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump({"identities": [identity]}, out)
    os.chmod(config, 0o600)  # a file written by an earlier version was 0644
    return config


def _dagster_home(stack: Stack) -> None:
    stack.dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copy(INSTANCE_YAML, stack.dagster_home / "dagster.yaml")


def _workspace(stack: Stack) -> Path:
    """The webserver and the daemon share one code server instead of each importing the code location."""
    path = stack.root / "workspace.yaml"
    server = {"host": "127.0.0.1", "port": stack.ports.dagster_code, "location_name": "mfd"}
    path.write_text(json.dumps({"load_from": [{"grpc_server": server}]}))  # JSON is YAML
    return path


def _wait_for_champion(stack: Stack) -> None:
    while stack.champion_version() is None:
        time.sleep(5)
    print(f"champion version {stack.champion_version()} in the registry: serving it", flush=True)


def prepare(stack: Stack, service: str) -> tuple[list[str], int]:
    """Wait for what `service` needs; return its command and the signal that stops it cleanly."""
    ports = stack.ports
    if service == "postgres":
        _initdb(stack)
        postgres = pg_binary("postgres")
        sock = stack.pg_data.parent / "sock"
        cmd = [str(postgres), "-D", str(stack.pg_data), "-p", str(ports.postgres), "-k", str(sock)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
        return as_postgres_user(cmd), signal.SIGINT  # SIGINT: fast shutdown (SIGTERM waits for clients)
    if service == "s3":
        data = stack.root / "s3"
        data.mkdir(parents=True, exist_ok=True)
        cmd = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
        cmd += [f"-master.port={ports.weed_master}", f"-volume.port={ports.weed_volume}"]
        cmd += [f"-filer.port={ports.weed_filer}", "-master.volumeSizeLimitMB=64", "-volume.max=100"]
        cmd += ["-s3", f"-s3.port={ports.s3}", f"-s3.config={_s3_config(stack)}"]
        return cmd + ["-s3.port.iceberg=0", "-s3.port.lance=0"], signal.SIGTERM
    if service == "mlflow":
        _ensure_databases(stack)
        _ensure_buckets(stack)
        # No password on the command line (`ps` shows it to every user): libpq reads PGPASSWORD from env().
        cmd = ["mlflow", "server", "--backend-store-uri", stack.pg_url("mlflow", "psycopg2", password=False)]
        cmd += ["--artifacts-destination", f"s3://{MLFLOW_BUCKET}/", "--host", "127.0.0.1"]
        return cmd + ["--port", str(ports.mlflow), "--workers", "1"], signal.SIGTERM
    if service == "dagster-code":
        _ensure_databases(stack)  # not the buckets: the location loads without S3 (the daemon waits for them)
        _dagster_home(stack)
        # `dagster api grpc` whose runs fork from a process that imported the location once
        # (deploy/dagster/code_server.py): a run starts in well under a second instead of re-importing.
        cmd = [sys.executable, str(CODE_SERVER), "-h", "127.0.0.1", "-p", str(ports.dagster_code)]
        return cmd + ["-m", "mfd_assets.definitions", "--location-name", "mfd"], signal.SIGTERM
    if service in ("dagster-webserver", "dagster-daemon"):
        _ensure_databases(stack)
        _dagster_home(stack)
        workspace = str(_workspace(stack))
        if service == "dagster-daemon":
            _ensure_buckets(stack)  # the sensors list them
            args = ["run", "-w", workspace]
        else:
            args = ["-h", "127.0.0.1", "-p", str(ports.dagster), "-w", workspace]
        # Imports while the code server loads the location, then starts once it serves.
        code = f"127.0.0.1:{ports.dagster_code}"
        return [sys.executable, str(AFTER_CODE_SERVER), code, service, *args], signal.SIGTERM
    if service == "bento":
        _wait_for_champion(stack)
        cmd = ["bentoml", "serve", "bento.service:MachineFailureService", "--host", "127.0.0.1"]
        return cmd + ["--port", str(ports.bento)], signal.SIGTERM
    raise MfdError(f"unknown service {service!r}: one of {', '.join(SERVICES)}")


def _hold_file(stack: Stack, service: str) -> Path:
    return stack.run_dir / f"{service}.hold"


def _pid_file(stack: Stack, service: str) -> Path:
    return stack.run_dir / f"{service}.pid"


def _tree_file(stack: Stack, service: str) -> Path:
    """The service's process tree as last seen: [pid, create_time] per process (a pid alone can be reused)."""
    return stack.run_dir / f"{service}.tree"


def service_ports(stack: Stack, service: str) -> list[int]:
    """The ports `service` listens on."""
    ports = stack.ports
    return {
        "postgres": [ports.postgres],
        "s3": [ports.s3, ports.weed_master, ports.weed_volume, ports.weed_filer],
        "mlflow": [ports.mlflow],
        "dagster-code": [ports.dagster_code],
        "dagster-webserver": [ports.dagster],
        "bento": [ports.bento],
    }.get(service, [])


def _become_subreaper() -> None:
    """Orphans of this supervisor's child (bentoml's workers after a SIGKILL of `bentoml serve`) are
    re-parented to this process instead of PID 1, so they stay in its process tree (Linux prctl)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):  # not Linux: the recorded tree still finds them
        pass


def _record_tree(stack: Stack, service: str, pid: int) -> None:
    """Remember `pid` and every process under it (and orphans re-parented to this supervisor)."""
    import psutil

    members: list[psutil.Process] = []
    for root in (pid, os.getpid()):
        try:
            members += psutil.Process(root).children(recursive=True)
        except psutil.NoSuchProcess:
            continue
    try:
        members.append(psutil.Process(pid))
    except psutil.NoSuchProcess:
        pass
    seen = {(p.pid, p.create_time()) for p in members if p.is_running()}
    path = _tree_file(stack, service)
    old = {tuple(entry) for entry in json.loads(path.read_text())} if path.exists() else set()
    alive = {entry for entry in old if _alive(*entry)}
    path.write_text(json.dumps(sorted(seen | alive)))


def _alive(pid: int, created: float) -> bool:
    """Process `pid` exists, is not a zombie, and is the one created at `created` (not a reused pid)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - created) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap(keep: int | None = None) -> None:
    """Collect exited orphans re-parented to this supervisor (subreaper), so none stays a zombie; not
    `keep` (the service's own process, whose exit status Popen collects)."""
    import psutil

    for child in psutil.Process().children():
        try:
            if child.pid != keep and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            pass


def kill_tree(stack: Stack, service: str, adopted: bool = False, timeout: float = 10.0) -> list[int]:
    """SIGKILL every process of the service's recorded tree still alive (and, from its supervisor, the
    orphans it adopted); wait until they are gone. The pids killed."""
    import psutil

    path = _tree_file(stack, service)
    recorded = [tuple(entry) for entry in json.loads(path.read_text())] if path.exists() else []
    mine = [(p.pid, p.create_time()) for p in psutil.Process().children(recursive=True)] if adopted else []
    targets = [(pid, created) for pid, created in {*recorded, *mine} if _alive(pid, created)]
    for pid, _created in targets:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while any(_alive(*target) for target in targets) and time.monotonic() < deadline:
        _reap()
        time.sleep(0.1)
    _reap()
    path.unlink(missing_ok=True)
    return [pid for pid, _created in targets]


def port_holders(port: int) -> list[int]:
    """Pids listening on 127.0.0.1:`port` (or all interfaces)."""
    import psutil

    held = []
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
            held.append(conn.pid)
    return sorted(set(held))


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def clear_orphans(stack: Stack, service: str) -> bool:
    """Before (re)starting `service`: kill what is left of its earlier process tree (by recorded pid and
    creation time, never by name). True once its ports are free; False (said once a wait) when another
    program holds one."""
    killed = kill_tree(stack, service, adopted=True)
    if killed:
        print(f"{service}: stopped {len(killed)} leftover process(es) of its tree: {killed}", flush=True)
    busy = [port for port in service_ports(stack, service) if not _port_free(port)]
    for port in busy:
        print(f"{service}: port {port} held by pid(s) {port_holders(port)}, not this service's", flush=True)
    return not busy


def _stop_child(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
        child.wait(timeout=STOP_WAIT_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def _supervise(stack: Stack, service: str, child: subprocess.Popen, stopping: Callable[[], bool]) -> None:
    """Wait while `child` runs, recording its process tree every 2 s and reaping adopted orphans."""
    polls = 0
    while child.poll() is None and not stopping():
        if polls % 10 == 0:
            try:
                _record_tree(stack, service, child.pid)
                _reap(keep=child.pid)
            except Exception as exc:  # noqa: BLE001 - a process gone between two reads: next time
                print(f"{service}: process tree not recorded ({exc})", flush=True)
        polls += 1
        time.sleep(0.2)


def run(stack: Stack, service: str) -> int:
    """Run `service` in the foreground (a Procfile line): restart it when it dies, unless held. Before each
    start, what is left of its earlier process tree is killed; a port another program holds is waited for."""
    stack.run_dir.mkdir(parents=True, exist_ok=True)
    _become_subreaper()
    stopping = False
    child: subprocess.Popen | None = None
    cmd, stop_signal = [], signal.SIGTERM

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child is None:  # still waiting for what the service needs
            raise SystemExit(0)
        if child.poll() is None:
            _stop_child(child, stop_signal)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    env = {**os.environ, **stack.env()}
    if service == "s3":
        env["WEED_MASTER_VOLUME_GROWTH_COPY_1"] = "1"  # one volume per bucket, not seven
    os.environ.update(stack.env())
    cmd, stop_signal = prepare(stack, service)
    while not stopping:
        if _hold_file(stack, service).exists() or not clear_orphans(stack, service):
            time.sleep(0.2 if _hold_file(stack, service).exists() else 2)
            continue
        child = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
        _pid_file(stack, service).write_text(str(child.pid))
        _supervise(stack, service, child, lambda: stopping)
        if stopping:
            break
        print(f"{service} exited with {child.returncode}; restarting", flush=True)
        time.sleep(1)
    kill_tree(stack, service, adopted=True)
    _pid_file(stack, service).unlink(missing_ok=True)
    return 0


def hold(stack: Stack, service: str) -> None:
    """Stop `service` (SIGKILL of it and every process under it: a crash) and keep it down until `release`."""
    import psutil

    _hold_file(stack, service).touch()
    pid_file = _pid_file(stack, service)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        try:
            tree = [pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            tree = []
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for member in tree:
            try:
                os.kill(member, signal.SIGKILL)
            except ProcessLookupError:
                pass


def release(stack: Stack, service: str) -> None:
    _hold_file(stack, service).unlink(missing_ok=True)


def restart(stack: Stack, service: str) -> None:
    """Stop `service` cleanly; its supervisor starts it again."""
    pid = int(_pid_file(stack, service).read_text())
    os.killpg(pid, signal.SIGINT if service == "postgres" else signal.SIGTERM)


# -- the whole stack -------------------------------------------------------------------------------------


def _supervisor_pid(stack: Stack) -> int | None:
    pid_file = stack.run_dir / "honcho.pid"
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text())
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our own child, exited: reap it
            raise ProcessLookupError
    except ChildProcessError:  # started by an earlier `up`: probe it
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pid_file.unlink()
        return None
    return pid


def _wait_ready(check: Callable[[], bool], what: str, timeout: float, log: Path) -> None:
    """`wait_until`, except that an MfdError from `check` (the supervisor died) ends the wait at once."""
    failure: list[MfdError] = []

    def guarded() -> bool:
        try:
            return check()
        except MfdError as exc:
            failure.append(exc)
            return True

    wait_until(guarded, what, timeout=timeout, log=log)
    if failure:
        raise failure[0]


def up(stack: Stack, timeout: float = 180.0) -> int:
    """Start the stack (or find it running), wait until every service answers, print the URLs."""
    started = time.monotonic()
    if _supervisor_pid(stack) is None:
        stack.run_dir.mkdir(parents=True, exist_ok=True)
        for held in stack.run_dir.glob("*.hold"):
            held.unlink()
        honcho = str(Path(sys.executable).with_name("honcho"))
        with stack.log.open("ab") as log:
            proc = subprocess.Popen(
                [honcho, "start", "-f", str(PROCFILE), "-d", str(REPO), "--no-colour"],
                cwd=REPO,
                env={**os.environ, **stack.env()},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        (stack.run_dir / "honcho.pid").write_text(str(proc.pid))
    checks = stack.checks()

    def ready(name: str) -> Callable[[], bool]:
        def check() -> bool:
            if _supervisor_pid(stack) is None:
                text = stack.log.read_text(errors="replace")
                first = text.find(" stopped (rc=")  # the service that brought the others down
                upto = text[: text.find("\n", first) + 1] if first >= 0 else text
                raise MfdError(
                    f"the stack stopped while starting {name}; the log up to then:\n{upto[-3000:]}"
                )
            return checks[name]()

        return check

    for name in (name for name in SERVICES if name != "bento"):
        _wait_ready(ready(name), f"stack {name}", timeout - (time.monotonic() - started), stack.log)
    champion = stack.champion_version()
    if champion is not None:
        _wait_ready(
            ready("bento"), "stack bento", max(60.0, timeout - (time.monotonic() - started)), stack.log
        )
    print(f"mfd stack up and healthy in {time.monotonic() - started:.1f} s (state in {stack.root})")
    for name, url in stack.urls().items():
        print(f"  {name:<18} {url}")
    if champion is None:
        print("  (bento starts once a champion is promoted: launch training_job in the UI or over GraphQL)")
    else:
        print(f"  serving champion version {champion}")
    print(f"  logs: {stack.log}; stop with `make stop`")
    return 0


def _wait_then_kill(pid: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def down(stack: Stack, timeout: float = 30.0) -> int:
    """Stop what `up` started; the state under the stack root stays for the next `up`."""
    pid = _supervisor_pid(stack)
    if pid is None:
        print("mfd stack is not running")
        return 0
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    for pid_file in stack.run_dir.glob("*.pid"):  # a child still stopping (PostgreSQL's checkpoint)
        _wait_then_kill(int(pid_file.read_text()), deadline=time.monotonic() + timeout)
        pid_file.unlink(missing_ok=True)
    for tree in stack.run_dir.glob("*.tree"):  # what a supervisor killed with SIGKILL left behind
        if killed := kill_tree(stack, tree.stem):
            print(f"{tree.stem}: stopped {len(killed)} leftover process(es) of its tree")
    print(f"mfd stack stopped; data kept in {stack.root}")
    return 0


def env_script(stack: Stack) -> str:
    """`export` lines for a shell (`eval "$(python -m mfd.services.stack env)"`): the stack's settings and
    secrets (readable by the stack's owner only), and the venv's bin directory (`mfd`, `dagster`) on PATH."""
    lines = [f"export {key}={shlex.quote(value)}" for key, value in stack.env().items() if key != "PATH"]
    venv_bin = shlex.quote(str(Path(sys.executable).parent))
    return "\n".join([*lines, f'export PATH={venv_bin}:"$PATH"'])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfd.services.stack", description=__doc__.split("\n")[0])
    parser.add_argument(
        "command", choices=["up", "down", "status", "env", "run", "hold", "release", "restart"]
    )
    parser.add_argument("service", nargs="?", choices=SERVICES)
    args = parser.parse_args(argv)
    stack = Stack.from_env()
    if args.command in ("run", "hold", "release", "restart") and not args.service:
        parser.error(f"{args.command} needs a service: one of {', '.join(SERVICES)}")
    try:
        if args.command == "up":
            return up(stack)
        if args.command == "down":
            return down(stack)
        if args.command == "status":
            for name, ok in stack.health().items():
                print(f"{name:<18} {'up' if ok else 'down'}")
            return 0
        if args.command == "env":
            print(env_script(stack))
            return 0
        if args.command == "run":
            return run(stack, args.service)
        {"hold": hold, "release": release, "restart": restart}[args.command](stack, args.service)
        return 0
    except MfdError as exc:
        print(f"mfd stack: error: {exc}", file=sys.stderr)
        return 1
    except PermissionError as exc:  # secrets.json is its owner's
        print(f"mfd stack: error: {exc}: the stack's secrets are readable by its owner only", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
