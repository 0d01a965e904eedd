"""A throw-away PostgreSQL cluster (initdb + pg_ctl) on 127.0.0.1, run as `postgres` when invoked as root."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfd.errors import MfdError
from mfd.services.processes import free_port


def pg_binary(name: str) -> str | None:
    """A PostgreSQL server binary on PATH or in Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


def as_postgres_user(cmd: list[str]) -> list[str]:
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
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise MfdError("initdb/pg_ctl not found: install PostgreSQL server binaries (make deps does)")
    root = Path(tempfile.mkdtemp(prefix="mfd-pg-"))
    os.chmod(root, 0o777)
    data, log = root / "data", root / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = free_port()
    subprocess.run(
        as_postgres_user([initdb, "-D", str(data), "-U", "mfd", "--auth=trust", "-E", "UTF8", "--no-sync"]),
        check=True,
        capture_output=True,
    )
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200"
    if not fsync:
        opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    subprocess.run(
        as_postgres_user([pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"]),
        check=True,
        capture_output=True,
    )
    server = Postgres("127.0.0.1", port, "mfd", "mfd")
    try:
        server.create_database("mfd")
        yield server
    finally:
        subprocess.run(
            as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)
