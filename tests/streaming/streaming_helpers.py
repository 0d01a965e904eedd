"""Shared by the stream's tests: a consumer on a thread, a publisher, counts by key, waiting for a state."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alerts.costs import DecisionPolicy
from mfd.generator import generate_readings
from mfd.generator.mqtt import MqttPublisher, MqttTarget
from mfd.modeling.model_io import FailureModel
from mfd.registry.champion import load_champion
from mfd.schema import PROFILE
from mfd.services import Postgres, as_postgres_user, pg_binary
from mfd.services.mosquitto import Mosquitto
from mfd.streaming.consumer import StreamConfig, StreamConsumer
from mfd_resources import Tracking


def target(broker: Mosquitto) -> MqttTarget:
    return MqttTarget(broker.url, broker.username, broker.password)


def champion_of(tracking: Tracking) -> Callable[[], tuple[FailureModel, DecisionPolicy]]:
    def load() -> tuple[FailureModel, DecisionPolicy]:
        loaded = load_champion(
            tracking.tracking_uri, tracking.model_name, tracking.client, tracking.local_home
        )
        return loaded.model, loaded.policy

    return load


@contextmanager
def consuming(
    broker: Mosquitto, engine: Engine, tracking: Tracking, client_id: str, **config: object
) -> Iterator[StreamConsumer]:
    """A StreamConsumer on a thread, subscribed; stopped (and its error raised) on exit."""
    consumer = StreamConsumer(
        StreamConfig(target(broker), client_id=client_id, batch_seconds=0.2, **config),
        engine,
        champion_of(tracking),
    )
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="mfd-stream-test")
    thread.start()
    try:
        wait_for(lambda: consumer.subscribed.is_set() or bool(errors), "the consumer to subscribe")
        yield consumer
    finally:
        stop.set()
        thread.join(60)
    if errors:
        raise errors[0]


def fleet(machines: int, rows: int, seed: int) -> pd.DataFrame:
    """Generated readings ending about now (inside the timestamp window)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    return generate_readings(machines, rows, seed, start, interval_s=1.0)


def publish(broker: Mosquitto, frame: pd.DataFrame) -> None:
    """Every reading of `frame` published (QoS 1) and acknowledged by the broker."""
    publisher = MqttPublisher(target(broker), PROFILE)
    try:
        publisher.publish_frame(frame)
    finally:
        publisher.close()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll `check` until true; fail naming `what` if it never becomes so (a guard, not a time assertion)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def counts(engine: Engine) -> dict[str, int]:
    """Readings, distinct keys, predictions, readings without a prediction, rejections."""
    queries = {
        "readings": "SELECT count(*) FROM readings",
        "keys": "SELECT count(*) FROM (SELECT DISTINCT timestamp, machine_id FROM readings) k",
        "predictions": "SELECT count(*) FROM predictions",
        "unscored": "SELECT count(*) FROM readings r WHERE NOT EXISTS "
        "(SELECT 1 FROM predictions p WHERE p.reading_id = r.id)",
        "rejected": "SELECT count(*) FROM rejected_readings",
    }
    with engine.connect() as conn:
        return {name: int(conn.execute(sa.text(sql)).scalar()) for name, sql in queries.items()}


def stored_keys(engine: Engine) -> set[tuple[str, pd.Timestamp]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT machine_id, timestamp FROM readings")).all()
    return {(m, pd.Timestamp(t).tz_convert("UTC")) for m, t in rows}


def keys_of(frame: pd.DataFrame) -> set[tuple[str, pd.Timestamp]]:
    stamps = pd.to_datetime(frame["timestamp"], utc=True)
    return set(zip(frame["machine_id"].astype(str), stamps, strict=True))


class StreamProcess:
    """`mfd stream` as a child process (its own session), its output lines collected on threads."""

    def __init__(
        self, broker: Mosquitto, env: dict[str, str], client_id: str, pause_at: str | None = None
    ) -> None:
        env = {**env, "MFD_MQTT_PASSWORD": broker.password}
        if pause_at:
            env["MFD_PAUSE_AT"] = pause_at
        command = [
            sys.executable,
            "-m",
            "mfd.cli.main",
            "stream",
            "--url",
            broker.url,
            "--username",
            broker.username,
            "--client-id",
            client_id,
            "--batch-seconds",
            "0.2",
            "--batch-readings",
            "100",
        ]
        self.proc = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        for stream in (self.proc.stdout, self.proc.stderr):
            threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.append(line.rstrip())

    def said(self, text: str) -> bool:
        if self.proc.poll() is not None and not any(text in line for line in self.lines):
            raise AssertionError(
                f"mfd stream exited ({self.proc.returncode}):\n" + "\n".join(self.lines[-30:])
            )
        return any(text in line for line in self.lines)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(60)


def child_env(database_url: str, tracking_uri: str, model_name: str, home: Path) -> dict[str, str]:
    """The environment of an `mfd stream` child (a test's or bench/streaming.py's): no MFD_* of the caller,
    the given database, registry, champion's name and MFD_HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    return env | {
        "MFD_DATABASE_URL": database_url,
        "MFD_MLFLOW_TRACKING_URI": tracking_uri,
        "MFD_MODEL_NAME": model_name,
        "MFD_HOME": str(home),
    }


def _data_directory(server: Postgres) -> Path:
    import psycopg

    with psycopg.connect(host=server.host, port=server.port, user=server.user, dbname="postgres") as conn:
        return Path(conn.execute("SHOW data_directory").fetchone()[0])


@contextmanager
def database_down(server: Postgres) -> Iterator[None]:
    """PostgreSQL stopped (fast shutdown) for the block, then started again with its own options."""
    data, pg_ctl = _data_directory(server), pg_binary("pg_ctl")
    assert pg_ctl is not None
    options = shlex.split((data / "postmaster.opts").read_text())[1:]
    at = options.index("-D")
    options = options[:at] + options[at + 2 :]
    subprocess.run(as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]), check=True)
    try:
        yield
    finally:
        log = data.parent / "postgres.log"
        start = [pg_ctl, "-D", str(data), "-o", shlex.join(options), "-l", str(log), "-w", "start"]
        subprocess.run(as_postgres_user(start), check=True, capture_output=True)
