"""The production stack on one machine: `make stack` / `make stop` (`python -m mfd.services.stack up|down`).

In: binaries on the machine (PostgreSQL, `weed`, mosquitto, prometheus, mlflow, dagster, bentoml) and
`deploy/Procfile`. Out: every service on 127.0.0.1 under one honcho supervisor, state kept under
`.mfd/stack/` across restarts:

    postgres           .mfd/stack/pg/data      readings (db mfd), MLflow (db mlflow), Dagster (db dagster)
    s3 (SeaweedFS)     .mfd/stack/s3           buckets mfd (incoming/, processed/, rejected/, dagster/)
                                               and mfd-mlflow (MLflow artifacts)
    mosquitto          .mfd/stack/mqtt         the MQTT broker: one account (password file), no anonymous
                                               clients, persistent sessions kept across restarts
    mlflow             PostgreSQL backend, artifacts proxied to s3://mfd-mlflow/
    dagster-code       the code location (mfd_assets.definitions), loaded once, as a gRPC server
    dagster-webserver  DAGSTER_HOME .mfd/stack/dagster (deploy/dagster/dagster.yaml: PostgreSQL storage)
    dagster-daemon     the sensors and the run queue
    console            `mfd console`: fleet risk, alarms and their actions (the stack's API key), /metrics
    prometheus         .mfd/stack/prometheus   scrapes the console, the Bento service and itself; the rules
                                               of deploy/prometheus/alerts.yml
    bento              `bentoml serve` of the champion, started once a champion exists
    stream             `mfd stream` on the broker, started once a champion exists

`SERVICE_TABLE` says, per service, what it needs before it starts, its command, the signal that stops it
cleanly, its ports and its readiness probe; one supervisor per Procfile line (`python -m mfd.services.stack
run <service>`, mfd/services/supervisor.py) waits for the needs, runs the command and restarts it if it dies,
unless the service is held (`hold <service>`: the fault tests stop a service that way and `release` it).
Ports are fixed (README's port map) and each can be moved with MFD_STACK_PORT_<NAME>; MFD_STACK_HOME moves
the state.
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
from datetime import UTC, datetime
from pathlib import Path

from mfd.errors import MfdError
from mfd.services import mosquitto, prometheus, supervisor
from mfd.services.postgres import as_postgres_user, pg_binary
from mfd.services.processes import wait_until
from mfd.services.s3 import weed_binary
from mfd.services.supervisor import Launch, Slot

REPO = Path(__file__).resolve().parents[2]
PROCFILE = REPO / "deploy" / "Procfile"
DAGSTER_DEPLOY = REPO / "deploy" / "dagster"
INSTANCE_YAML = DAGSTER_DEPLOY / "dagster.yaml"
CODE_SERVER = REPO / "deploy" / "dagster" / "code_server.py"
AFTER_CODE_SERVER = REPO / "deploy" / "dagster" / "after_code_server.py"
BUCKET = "mfd"
MLFLOW_BUCKET = "mfd-mlflow"
DATABASES = ("mfd", "mlflow", "dagster")
PG_USER = "mfd"
MQTT_USER = "mfd"
STREAM_CLIENT_ID = "mfd-stream"
# The stack's credentials, generated on its first start into <root>/secrets.json (mode 0600): no two stacks
# share a key, and only the stack's owner reads them (`python -m mfd.services.stack env`).
SECRET_NAMES = ("s3_access_key", "s3_secret_key", "api_key", "pg_password", "mqtt_password")


@dataclass(frozen=True)
class Ports:
    dagster: int = 3000
    bento: int = 3001
    console: int = 3002
    mlflow: int = 5000
    postgres: int = 5433
    s3: int = 8333
    mqtt: int = 1883
    prometheus: int = 9090
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


def _new_secret(name: str) -> str:
    return f"mfd{secrets.token_hex(8)}" if name == "s3_access_key" else secrets.token_hex(24)


def _write_private(path: Path, text: str) -> None:
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as out:
        out.write(text)


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
        """The stack's keys and passwords: read from `secrets_file`, generated there on first use (0600);
        a name added since the file was written (the broker's password) is generated into it then."""
        path = self.secrets_file
        known = json.loads(path.read_text()) if path.exists() else {}
        if all(name in known for name in SECRET_NAMES):
            return known
        path.parent.mkdir(parents=True, exist_ok=True)
        made = {name: known.get(name) or _new_secret(name) for name in SECRET_NAMES}
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        _write_private(temporary, json.dumps(made))
        try:
            if known:
                os.replace(temporary, path)
            else:
                os.link(temporary, path)  # the first writer wins; a concurrent `up` reads its secrets
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
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

    @property
    def stream_status(self) -> Path:
        """`mfd stream`'s counters (MFD_HOME/stream-status.json), rewritten every 5 s."""
        return self.root / "home" / "stream-status.json"

    def slot(self, service: str) -> Slot:
        return Slot(self.run_dir, service)

    def pg_url(self, dbname: str, driver: str = "psycopg", password: bool = True) -> str:
        """SQLAlchemy URL of a stack database, with the password unless `password=False` (for display)."""
        secret = f":{self.secrets()['pg_password']}" if password else ""
        return f"postgresql+{driver}://{PG_USER}{secret}@127.0.0.1:{self.ports.postgres}/{dbname}"

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.s3}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.ports.mqtt}"

    def url(self, port: int, path: str = "") -> str:
        return f"http://127.0.0.1:{port}{path}"

    def urls(self) -> dict[str, str]:
        p = self.ports
        return {
            "Dagster UI": self.url(p.dagster),
            "Dagster GraphQL": self.url(p.dagster, "/graphql"),
            "MLflow": self.url(p.mlflow),
            "Bento (champion)": self.url(p.bento),
            "Console": self.url(p.console),
            "Prometheus": self.url(p.prometheus),
            "S3 (SeaweedFS)": self.s3_url,
            "MQTT (mosquitto)": f"{self.mqtt_url} (user {MQTT_USER})",
            "PostgreSQL": self.pg_url("mfd", password=False),
        }

    def env(self) -> dict[str, str]:
        """The variables every service and the code location get: the same as pointing mfd at a real
        MinIO, PostgreSQL, MLflow and MQTT broker (docs/operating.md)."""
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
            "MFD_MLFLOW_TRACKING_URI": self.url(self.ports.mlflow),
            "MFD_MODEL_NAME": self.model_name,
            "MFD_SERVICE_URL": self.url(self.ports.bento),
            "MFD_API_KEYS": os.environ.get("MFD_API_KEYS") or keys["api_key"],
            "MFD_MQTT_URL": self.mqtt_url,
            "MFD_MQTT_USERNAME": MQTT_USER,
            "MFD_MQTT_PASSWORD": keys["mqtt_password"],
            "MFD_CONSOLE_URL": self.url(self.ports.console),
            "MFD_PROMETHEUS_URL": self.url(self.ports.prometheus),
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

    # -- readiness probes (the table's `ready`) ---------------------------------------------------------
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

    def mqtt_ready(self) -> bool:
        """The broker accepts the stack's account."""
        password = self.secrets()["mqtt_password"]
        return mosquitto.accepts_login("127.0.0.1", self.ports.mqtt, MQTT_USER, password)

    def mlflow_ready(self) -> bool:
        return _http_ok(self.url(self.ports.mlflow, "/health"))

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
        return _http_ok(self.url(self.ports.dagster, "/server_info"))

    def daemon_ready(self) -> bool:
        """The webserver reports the sensor daemon's heartbeat as healthy."""
        query = '{ instance { daemonHealth { daemonStatus(daemonType: "SENSOR") { healthy } } } }'
        request = urllib.request.Request(
            self.url(self.ports.dagster, "/graphql"),
            data=json.dumps({"query": query}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            data = json.load(response)
        return bool(data["data"]["instance"]["daemonHealth"]["daemonStatus"]["healthy"])

    def console_ready(self) -> bool:
        return _http_ok(self.url(self.ports.console, "/healthz"))

    def prometheus_ready(self) -> bool:
        return _http_ok(self.url(self.ports.prometheus, "/-/ready"))

    def bento_ready(self) -> bool:
        return _http_ok(self.url(self.ports.bento, "/readyz"))

    def stream_ready(self) -> bool:
        """`mfd stream` rewrote its status file within the last 15 s (it does every 5 s once consuming)."""
        status = json.loads(self.stream_status.read_text())
        age = datetime.now(UTC) - datetime.fromisoformat(status["updated_at"])
        return age.total_seconds() < 15 and self.stream_status.stat().st_mtime > _started(self, "stream")

    def champion_version(self) -> str | None:
        """The registry's champion version, or None (none yet, or MLflow unreachable)."""
        request = urllib.request.Request(
            self.url(self.ports.mlflow, "/api/2.0/mlflow/registered-models/alias")
            + f"?name={self.model_name}&alias=champion"
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return str(json.load(response)["model_version"]["version"])
        except Exception:  # noqa: BLE001 - no champion, no model, or MLflow down: none to serve
            return None

    def checks(self) -> dict[str, Callable[[], bool]]:
        return {service.name: (lambda s=service: s.ready(self)) for service in SERVICE_TABLE}

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


def _started(stack: Stack, service: str) -> float:
    """When the service's current process started (its pid file's time); 0 when unknown."""
    try:
        return stack.slot(service).pid_file.stat().st_mtime
    except FileNotFoundError:
        return 0.0


# -- what a service needs, and the table of services ---------------------------------------------------


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
    print(f"champion version {stack.champion_version()} in the registry: starting", flush=True)


def _broker(stack: Stack) -> None:
    """The broker's password file (the stack's account) and config under .mfd/stack/mqtt; its log to stderr
    (unbuffered, unlike its stdout), so into the stack's log as it happens."""
    password = stack.secrets()["mqtt_password"]
    mosquitto.broker_dir(stack.root / "mqtt", stack.ports.mqtt, MQTT_USER, password, log="stderr")


def _prometheus_config(stack: Stack) -> None:
    p = stack.ports
    targets = {"mfd-console": f"127.0.0.1:{p.console}", "mfd-bento": f"127.0.0.1:{p.bento}"}
    key = stack.env()["MFD_API_KEYS"].split(",")[0]
    prometheus.stack_config(stack.root / "prometheus", targets, key, f"127.0.0.1:{p.prometheus}")


# What a service waits for before it starts, by name (the table's `needs`), in the order listed there.
NEEDS: dict[str, Callable[[Stack], None]] = {
    "cluster": _initdb,
    "databases": _ensure_databases,
    "buckets": _ensure_buckets,
    "dagster home": _dagster_home,
    "broker config": _broker,
    "prometheus config": _prometheus_config,
    "champion": _wait_for_champion,
}


def _postgres(stack: Stack) -> list[str]:
    sock = stack.pg_data.parent / "sock"
    cmd = [str(pg_binary("postgres")), "-D", str(stack.pg_data), "-p", str(stack.ports.postgres)]
    cmd += ["-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=200"]
    return as_postgres_user(cmd)


def _s3(stack: Stack) -> list[str]:
    ports, data = stack.ports, stack.root / "s3"
    data.mkdir(parents=True, exist_ok=True)
    cmd = [weed_binary(), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1"]
    cmd += [f"-master.port={ports.weed_master}", f"-volume.port={ports.weed_volume}"]
    cmd += [f"-filer.port={ports.weed_filer}", "-master.volumeSizeLimitMB=64", "-volume.max=100"]
    cmd += ["-s3", f"-s3.port={ports.s3}", f"-s3.config={_s3_config(stack)}"]
    return cmd + ["-s3.port.iceberg=0", "-s3.port.lance=0"]


def _mosquitto(stack: Stack) -> list[str]:
    return [mosquitto.mosquitto_binary("mosquitto"), "-c", str(stack.root / "mqtt" / "mosquitto.conf")]


def _mlflow(stack: Stack) -> list[str]:
    # No password on the command line (`ps` shows it to every user): libpq reads PGPASSWORD from env().
    cmd = ["mlflow", "server", "--backend-store-uri", stack.pg_url("mlflow", "psycopg2", password=False)]
    cmd += ["--artifacts-destination", f"s3://{MLFLOW_BUCKET}/", "--host", "127.0.0.1"]
    return cmd + ["--port", str(stack.ports.mlflow), "--workers", "1"]


def _code_server(stack: Stack) -> list[str]:
    # `dagster api grpc` whose runs fork from a process that imported the location once
    # (deploy/dagster/code_server.py): a run starts in well under a second instead of re-importing.
    cmd = [sys.executable, str(CODE_SERVER), "-h", "127.0.0.1", "-p", str(stack.ports.dagster_code)]
    return cmd + ["-m", "mfd_assets.definitions", "--location-name", "mfd"]


def _after_code_server(service: str, args: list[str]) -> Callable[[Stack], list[str]]:
    """The webserver or the daemon: imports while the code server loads the location, starts once it serves."""

    def command(stack: Stack) -> list[str]:
        code, workspace = f"127.0.0.1:{stack.ports.dagster_code}", str(_workspace(stack))
        own = [a.format(port=stack.ports.dagster) for a in args]
        return [sys.executable, str(AFTER_CODE_SERVER), code, service, *own, "-w", workspace]

    return command


def _mfd(*args: str) -> Callable[[Stack], list[str]]:
    """An `mfd` subcommand of the venv; `{name}` in an argument is the stack's port of that name."""

    def command(stack: Stack) -> list[str]:
        ports = {f.name: getattr(stack.ports, f.name) for f in fields(stack.ports)}
        return [str(Path(sys.executable).with_name("mfd")), *(a.format(**ports) for a in args)]

    return command


def _prometheus(stack: Stack) -> list[str]:
    root = stack.root / "prometheus"
    return prometheus.command(root / "prometheus.yml", root / "data", f"127.0.0.1:{stack.ports.prometheus}")


def _bento(stack: Stack) -> list[str]:
    cmd = ["bentoml", "serve", "bento.service:MachineFailureService", "--host", "127.0.0.1"]
    return cmd + ["--port", str(stack.ports.bento)]


@dataclass(frozen=True)
class Service:
    """One line of the stack: what it waits for (`NEEDS`), how it starts, stops, listens and answers."""

    name: str
    needs: tuple[str, ...]
    command: Callable[[Stack], list[str]]
    ready: Callable[[Stack], bool]
    ports: Callable[[Ports], tuple[int, ...]] = lambda _ports: ()
    stop_signal: int = signal.SIGTERM
    env: tuple[tuple[str, str], ...] = ()

    @property
    def after_champion(self) -> bool:
        return "champion" in self.needs


SERVICE_TABLE: tuple[Service, ...] = (
    # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients).
    Service("postgres", ("cluster",), _postgres, Stack.pg_ready, lambda p: (p.postgres,), signal.SIGINT),
    Service(
        "s3",
        (),
        _s3,
        Stack.s3_ready,
        lambda p: (p.s3, p.weed_master, p.weed_volume, p.weed_filer),
        env=(("WEED_MASTER_VOLUME_GROWTH_COPY_1", "1"),),  # one volume per bucket, not seven
    ),
    Service("mosquitto", ("broker config",), _mosquitto, Stack.mqtt_ready, lambda p: (p.mqtt,)),
    Service("mlflow", ("databases", "buckets"), _mlflow, Stack.mlflow_ready, lambda p: (p.mlflow,)),
    # Not the buckets: the location loads without S3 (the daemon waits for them).
    Service(
        "dagster-code",
        ("databases", "dagster home"),
        _code_server,
        Stack.code_ready,
        lambda p: (p.dagster_code,),
    ),
    Service(
        "dagster-webserver",
        ("databases", "dagster home"),
        _after_code_server("dagster-webserver", ["-h", "127.0.0.1", "-p", "{port}"]),
        Stack.dagster_ready,
        lambda p: (p.dagster,),
    ),
    Service(
        "dagster-daemon",
        ("databases", "buckets", "dagster home"),  # the sensors list the buckets
        _after_code_server("dagster-daemon", ["run"]),
        Stack.daemon_ready,
    ),
    Service(
        "console",
        ("databases",),
        _mfd("console", "--host", "127.0.0.1", "--port", "{console}"),
        Stack.console_ready,
        lambda p: (p.console,),
    ),
    Service(
        "prometheus", ("prometheus config",), _prometheus, Stack.prometheus_ready, lambda p: (p.prometheus,)
    ),
    Service("bento", ("champion",), _bento, Stack.bento_ready, lambda p: (p.bento,)),
    Service(
        "stream",
        ("databases", "champion"),
        _mfd("stream", "--client-id", STREAM_CLIENT_ID),  # the broker and account from MFD_MQTT_*
        Stack.stream_ready,
    ),
)
SERVICES = tuple(service.name for service in SERVICE_TABLE)


def service(name: str) -> Service:
    """The table's entry for `name`."""
    for entry in SERVICE_TABLE:
        if entry.name == name:
            return entry
    raise MfdError(f"unknown service {name!r}: one of {', '.join(SERVICES)}")


def service_ports(stack: Stack, name: str) -> list[int]:
    """The ports service `name` listens on."""
    return list(service(name).ports(stack.ports))


def prepare(stack: Stack, name: str) -> Launch:
    """Wait for what service `name` needs (in the table's order); how to start and stop it."""
    entry = service(name)
    for need in entry.needs:
        NEEDS[need](stack)
    env = {**os.environ, **stack.env(), **dict(entry.env)}
    return Launch(entry.command(stack), REPO, env, entry.stop_signal, entry.ports(stack.ports))


def run(stack: Stack, name: str) -> int:
    """Run service `name` in the foreground (a Procfile line): restart it when it dies, unless held."""
    os.environ.update(stack.env())
    return supervisor.supervise(stack.slot(name), lambda: prepare(stack, name))


def kill_tree(stack: Stack, name: str, adopted: bool = False, timeout: float = 10.0) -> list[int]:
    """SIGKILL what is alive of service `name`'s recorded process tree; the pids killed."""
    return supervisor.kill_tree(stack.slot(name), adopted, timeout)


def hold(stack: Stack, name: str) -> None:
    """Stop service `name` (SIGKILL of it and every process under it: a crash); down until `release`."""
    supervisor.hold(stack.slot(name))


def release(stack: Stack, name: str) -> None:
    supervisor.release(stack.slot(name))


def restart(stack: Stack, name: str) -> None:
    """Stop service `name` cleanly (its stop signal); its supervisor starts it again."""
    supervisor.restart(stack.slot(name), service(name).stop_signal)


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


# Eleven services start at once on two cores: resuming after a crash at load ~25 took 200-260 s until the
# champion was served (MLflow's start alone ~160 s), near the 180 s this was with seven.
UP_TIMEOUT_S = 300.0


def up(stack: Stack, timeout: float = UP_TIMEOUT_S) -> int:
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

    for entry in SERVICE_TABLE:
        if not entry.after_champion:
            left = timeout - (time.monotonic() - started)
            _wait_ready(ready(entry.name), f"stack {entry.name}", left, stack.log)
    champion = stack.champion_version()
    for entry in SERVICE_TABLE if champion is not None else ():
        if entry.after_champion:
            left = max(120.0, timeout - (time.monotonic() - started))
            _wait_ready(ready(entry.name), f"stack {entry.name}", left, stack.log)
    print(f"mfd stack up and healthy in {time.monotonic() - started:.1f} s (state in {stack.root})")
    for name, url in stack.urls().items():
        print(f"  {name:<18} {url}")
    if champion is None:
        later = " and ".join(e.name for e in SERVICE_TABLE if e.after_champion)
        print(f"  ({later} start once a champion is promoted: launch training_job in the UI or over GraphQL)")
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
