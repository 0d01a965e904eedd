"""A throw-away Redis server on 127.0.0.1 (Debian's `redis-server`): the Celery broker and result backend
of the celery executor's tests and bench (deploy/celery). No persistence, a free port, stopped on exit."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mfd.errors import MfdError
from mfd.services.processes import free_port, stop_process_group, wait_until


def redis_binary() -> str:
    """`redis-server` on PATH or in /usr/bin; MfdError when missing."""
    found = shutil.which("redis-server") or next(
        (str(p) for p in (Path("/usr/bin/redis-server"),) if p.exists()), None
    )
    if not found:
        raise MfdError("redis-server not found: install Debian's redis-server (make deps does)")
    return found


def server_args(root: Path, port: int) -> list[str]:
    """Command-line configuration: 127.0.0.1:`port`, no RDB snapshots or AOF, logs and pid under `root`."""
    return [
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(root),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--logfile",
        str(root / "redis.log"),
    ]


@dataclass
class Redis:
    """A redis-server process; `url(db)` is the kombu/Celery URL of one of its databases."""

    host: str
    port: int
    root: Path
    _proc: subprocess.Popen | None = field(default=None, repr=False)

    def url(self, db: int = 0) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def log(self) -> Path:
        return self.root / "redis.log"

    def start(self) -> None:
        """Start the server; returns once it answers PING."""
        if self._proc is not None and self._proc.poll() is None:
            return
        self._proc = subprocess.Popen(
            [redis_binary(), *server_args(self.root, self.port)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "stderr.log", "ab"),  # noqa: SIM115 - the child holds it
            start_new_session=True,
        )
        wait_until(self._pong, f"redis-server on port {self.port}", timeout=30, log=self.log)

    def _pong(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            raise MfdError(f"redis-server exited with status {self._proc.returncode}; see {self.log}")
        with socket.create_connection((self.host, self.port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def stop(self) -> None:
        """Stop the server (SIGTERM)."""
        if self._proc is not None:
            stop_process_group(self._proc)
            self._proc = None


@contextmanager
def redis_server(port: int | None = None) -> Iterator[Redis]:
    """A Redis server in a temp dir on 127.0.0.1 (a free port unless given), stopped and removed on exit."""
    root = Path(tempfile.mkdtemp(prefix="mfd-redis-"))
    server = Redis("127.0.0.1", port or free_port(), root)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
