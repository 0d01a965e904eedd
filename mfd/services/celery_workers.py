"""dagster-celery workers as separate processes, each in its own directory standing for one machine: its own
working directory, DAGSTER_HOME (a copy of the PostgreSQL instance config) and MFD_HOME. They share only
what the environment points them at: PostgreSQL, the bucket, MLflow and the broker. Used by tests/scale,
bench/scale.py and `make celery`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mfd.errors import MfdError
from mfd.services.processes import stop_process_group


@dataclass
class CeleryWorker:
    """One `dagster-celery worker start` process group, named `name` (Celery hostname `name@<host>`)."""

    name: str
    root: Path
    env: dict[str, str]
    config: Path
    _proc: subprocess.Popen | None = field(default=None, repr=False)
    _log_from: int = field(default=0, repr=False)  # where this start's lines begin (the log is appended to)

    @property
    def log(self) -> Path:
        return self.root / "worker.log"

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise MfdError(f"celery worker {self.name} is not running")
        return self._proc.pid

    def start(self, timeout: float = 180) -> None:
        """Start the worker (solo pool: the step runs in the worker process); returns once it is ready."""
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        """Start the worker process without waiting for it (`wait_ready`)."""
        command = [
            str(Path(sys.executable).with_name("dagster-celery")),
            *("worker", "start", "-A", "dagster_celery.app", "-y", str(self.config), "-n", self.name),
            *("--", "--pool=solo", "--without-mingle", "--without-gossip", f"--logfile={self.log}"),
        ]
        bin_dir = str(Path(sys.executable).parent)  # `dagster-celery` runs `celery` from PATH
        self._log_from = self.log.stat().st_size if self.log.exists() else 0
        self._proc = subprocess.Popen(
            command,
            cwd=self.root,
            env={**self.env, "PATH": os.pathsep.join([bin_dir, self.env.get("PATH", "")])},
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr.log", "ab"),  # noqa: SIM115 - the child holds it
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 180) -> None:
        """Return once the launched worker logs " ready."; stop it and fail with its stderr otherwise."""
        if self._proc is None:
            raise MfdError(f"celery worker {self.name} was not launched")
        deadline = time.monotonic() + timeout
        while not (self.log.exists() and b" ready." in self.log.read_bytes()[self._log_from :]):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                status = self._proc.poll()
                self.stop()
                tail = (self.root / "stderr.log").read_text(errors="replace")[-2000:]
                raise MfdError(f"celery worker {self.name} did not get ready (exit status {status}):\n{tail}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL the whole worker at once (the machine lost): nothing is acknowledged or handed back."""
        if self._proc is not None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), SIGKILL after 20 s."""
        if self._proc is not None:
            stop_process_group(self._proc)
            self._proc = None


def machine_env(root: Path, instance_yaml: Path, env: Mapping[str, str]) -> dict[str, str]:
    """`root` made a machine's directory: DAGSTER_HOME with a copy of `instance_yaml`, MFD_HOME, and `env`
    over this process's environment."""
    home = root / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(instance_yaml, home / "dagster.yaml")
    return {**os.environ, **env, "DAGSTER_HOME": str(home), "MFD_HOME": str(root / "mfd")}


@contextmanager
def celery_workers(
    root: Path, names: list[str], config: Path, instance_yaml: Path, env: Mapping[str, str]
) -> Iterator[list[CeleryWorker]]:
    """One started worker per name, each in `root/<name>`, stopped on exit. They start side by side: each
    takes seconds to import dagster and the code location."""
    with ExitStack() as stack:
        workers = []
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
            worker = CeleryWorker(name, root / name, machine_env(root / name, instance_yaml, env), config)
            stack.callback(worker.stop)
            worker.launch()
            workers.append(worker)
        for worker in workers:
            worker.wait_ready()
        yield workers


REPO = Path(__file__).resolve().parents[2]


def run_on_workers(job: str, root: Path, extra: list[str]) -> int:
    """`make celery`: a Redis broker and two workers under `root`, then `deploy/celery/run.py job` from
    `root/orchestrator`, all with this process's environment (the running stack's: `make stack`)."""
    from mfd.services.redis import redis_server

    instance_yaml = REPO / "deploy" / "dagster" / "dagster.yaml"
    config = REPO / "deploy" / "celery" / "celery.yaml"
    missing = [name for name in ("MFD_DAGSTER_PG_HOST", "MFD_DATABASE_URL") if not os.environ.get(name)]
    if missing:
        raise MfdError(
            f"{', '.join(missing)} unset: start the stack (make stack) or set the production variables"
        )
    with redis_server() as redis:
        env = {
            "MFD_CELERY_BROKER_URL": redis.url(0),
            "MFD_CELERY_BACKEND_URL": redis.url(1),
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(REPO / "deploy" / "dagster"), os.environ.get("PYTHONPATH")])
            ),
        }
        with celery_workers(root, ["w1", "w2"], config, instance_yaml, env) as workers:
            print(f"broker {redis.url(0)}; workers {', '.join(str(w.log) for w in workers)}", flush=True)
            where = root / "orchestrator"
            where.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, str(REPO / "deploy" / "celery" / "run.py"), job, *extra]
            return subprocess.run(
                command, cwd=where, env=machine_env(where, instance_yaml, env), check=False
            ).returncode


def main(argv: list[str] | None = None) -> int:
    """python -m mfd.services.celery_workers JOB [run.py options]: run JOB on two Celery workers."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print(
            "usage: python -m mfd.services.celery_workers JOB [--select a,b] [--config run.yaml]",
            file=sys.stderr,
        )
        return 2
    root = Path(os.environ.get("MFD_CELERY_HOME") or REPO / ".mfd" / "celery")
    try:
        return run_on_workers(args[0], root, args[1:])
    except MfdError as exc:
        print(f"mfd celery: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
