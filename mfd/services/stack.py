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
INSTANCE_YAML = REPO / "deploy" / "dagster" / "dagster.yaml"
CODE_SERVER = REPO / "deploy" / "dagster" / "code_server.py"
AFTER_CODE_SERVER = REPO / "deploy" / "dagster" / "after_code_server.py"
SERVICES = ("postgres", "s3", "mlflow", "dagster-code", "dagster-webserver", "dagster-daemon", "bento")
BUCKET = "mfd"
MLFLOW_BUCKET = "mfd-mlflow"
DATABASES = ("mfd", "mlflow", "dagster")
PG_USER = "mfd"
S3_ACCESS_KEY = "mfd-stack-access"  # a loopback-only server; production keys come from the environment
S3_SECRET_KEY = "mfd-stack-secret"  # noqa: S105
API_KEY = "mfd-stack-key"  # the stack's one serving key unless MFD_API_KEYS is set
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

    def pg_url(self, dbname: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://{PG_USER}@127.0.0.1:{self.ports.postgres}/{dbname}"

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
            "PostgreSQL": self.pg_url("mfd"),
        }

    def env(self) -> dict[str, str]:
        """The variables every service and the code location get: the same as pointing mfd at a real
        MinIO, PostgreSQL and MLflow (docs/operating.md)."""
        return {
            "MFD_STACK_HOME": str(self.root),
            **self.ports.env(),
            "MFD_DEPLOYMENT": "production",
            "MFD_HOME": str(self.root / "home"),
            "MFD_DATABASE_URL": self.pg_url("mfd"),
            "MFD_S3_BUCKET": BUCKET,
            "MFD_S3_ENDPOINT_URL": self.s3_url,
            "MFD_S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "MFD_S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "MFD_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{self.ports.mlflow}",
            "MFD_MODEL_NAME": self.model_name,
            "MFD_SERVICE_URL": f"http://127.0.0.1:{self.ports.bento}",
            "MFD_API_KEYS": os.environ.get("MFD_API_KEYS") or API_KEY,
            "DAGSTER_HOME": str(self.dagster_home),
            "MFD_DAGSTER_PG_HOST": "127.0.0.1",
            "MFD_DAGSTER_PG_PORT": str(self.ports.postgres),
            "MFD_DAGSTER_PG_USER": PG_USER,
            "MFD_DAGSTER_PG_PASSWORD": "",
            "MFD_DAGSTER_PG_DB": "dagster",
            "BENTOML_HOME": str(self.root / "bentoml"),
            "BENTOML_DO_NOT_TRACK": "true",
            "MLFLOW_S3_ENDPOINT_URL": self.s3_url,
            "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    # -- readiness checks ---------------------------------------------------------------------------------
    def s3_client(self):  # noqa: ANN201 - boto3 client
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.s3_url,
            aws_access_key_id=S3_ACCESS_KEY,
            aws_secret_access_key=S3_SECRET_KEY,
            region_name="us-east-1",
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )

    def pg_ready(self) -> bool:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.ports.postgres, user=PG_USER, dbname="postgres", connect_timeout=2
        ) as conn:
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
    import psycopg
    from psycopg import errors

    wait_until(stack.pg_ready, "stack PostgreSQL", timeout=120)
    with psycopg.connect(
        host="127.0.0.1", port=stack.ports.postgres, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
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
    made = subprocess.run(
        as_postgres_user([initdb, "-D", str(stack.pg_data), "-U", PG_USER, "--auth=trust", "-E", "UTF8"]),
        capture_output=True,
        text=True,
    )
    if made.returncode:
        raise MfdError(f"initdb into {stack.pg_data} failed: {made.stderr.strip()}")


def _s3_config(stack: Stack) -> Path:
    config = stack.root / "s3.json"
    identity = {
        "name": "mfd",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
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
        cmd = ["mlflow", "server", "--backend-store-uri", stack.pg_url("mlflow", "psycopg2")]
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


def _stop_child(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
        child.wait(timeout=STOP_WAIT_S)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def run(stack: Stack, service: str) -> int:
    """Run `service` in the foreground (a Procfile line): restart it when it dies, unless held."""
    stack.run_dir.mkdir(parents=True, exist_ok=True)
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
        if _hold_file(stack, service).exists():
            time.sleep(0.2)
            continue
        child = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True)
        _pid_file(stack, service).write_text(str(child.pid))
        while child.poll() is None and not stopping:
            time.sleep(0.2)
        if stopping:
            break
        print(f"{service} exited with {child.returncode}; restarting", flush=True)
        time.sleep(1)
    _pid_file(stack, service).unlink(missing_ok=True)
    return 0


def _descendants(pid: int) -> list[int]:
    """Every live process under `pid`, read from /proc (bentoml's workers leave its process group)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def hold(stack: Stack, service: str) -> None:
    """Stop `service` (SIGKILL of it and every process under it: a crash) and keep it down until `release`."""
    _hold_file(stack, service).touch()
    pid_file = _pid_file(stack, service)
    if pid_file.exists():
        pid = int(pid_file.read_text())
        tree = _descendants(pid)
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for child in tree:
            try:
                os.kill(child, signal.SIGKILL)
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
    print(f"mfd stack stopped; data kept in {stack.root}")
    return 0


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
            for key, value in stack.env().items():
                if key != "PATH":
                    print(f"export {key}={value}")
            return 0
        if args.command == "run":
            return run(stack, args.service)
        {"hold": hold, "release": release, "restart": restart}[args.command](stack, args.service)
        return 0
    except MfdError as exc:
        print(f"mfd stack: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
