"""Streaming benchmark on 127.0.0.1 (`.venv/bin/python bench/streaming.py`): a real Mosquitto and PostgreSQL.

(a) Ceiling: the broker alone with the same client (paho-mqtt, QoS 1): a fleet published at --rate readings/s
    for --ceiling-seconds, publish -> receive latency per reading at a subscriber.
(b) The stream: the same fleet at the same rate for --seconds into `mfd stream` (a child process, persistent
    session, manual ack): publish -> prediction stored latency per reading, "stored" meaning visible to a
    reader (the bench polls the predictions every 0.1 s, so figures carry up to ~0.1 s of polling).
Printed: p50/p95/max of both, and the stream's p95 over the broker's (target: stream p95 <= 2 s).
Issue 27 asks for 2,000 readings/s (200 machines x 10 Hz) for 5 minutes: the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.generator import generate_readings
from mfd.generator.mqtt import MqttPublisher, MqttTarget, mqtt_client, reading_payloads
from mfd.modeling.model_io import CHAMPION, log_failure_model
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN, PROFILE
from mfd.services import postgres_server
from mfd.services.mosquitto import Mosquitto, mosquitto_server
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.tracking import connect, experiment_id

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "bench-streaming"
Key = tuple[str, int]  # machine, timestamp in microseconds (what the database keeps)
Message = tuple[str, bytes, Key]


def key_of(machine: str, stamp: object) -> Key:
    return machine, pd.Timestamp(stamp).value // 1000


def register_champion(settings: Settings) -> None:
    """A HistGradientBoosting (100 iterations) on AI4I as champion in the embedded MLflow store."""
    client = connect(settings.tracking_uri)
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=100, random_state=0))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    with mlflow.start_run(experiment_id=experiment_id(client, "bench", settings.artifacts_dir.as_uri())):
        _, version = log_failure_model(pipeline, ai4i, registered_name=MODEL_NAME, threshold=0.5)
    client.set_registered_model_alias(MODEL_NAME, CHAMPION, version.version)


def fleet_messages(machines: int, rate: float, seconds: float, seed: int) -> list[Message]:
    """`rate * seconds` readings of `machines` machines (each every machines/rate s) as MQTT messages."""
    start = datetime.now(UTC).replace(microsecond=0)
    frame = generate_readings(machines, int(rate * seconds), seed, start, interval_s=machines / rate)
    out = []
    for topic, payload in reading_payloads(frame, PROFILE):
        body = json.loads(payload)
        out.append((topic, payload, key_of(body["machine_id"], body["timestamp"])))
    return out


def publish_paced(target: MqttTarget, messages: list[Message], rate: float) -> dict[Key, float]:
    """Publish at `rate` messages/s in ticks of 0.1 s; the wall time each was handed to the client."""
    sent: dict[Key, float] = {}
    publisher = MqttPublisher(target, PROFILE, client_id="bench-publisher")
    per_tick, started = max(1, round(rate / 10)), time.monotonic()
    for tick, first in enumerate(range(0, len(messages), per_tick)):
        for topic, payload, key in messages[first : first + per_tick]:
            sent[key] = time.time()
            publisher.publish(topic, payload)
        time.sleep(max(0.0, started + (tick + 1) * 0.1 - time.monotonic()))
    publisher.close(timeout=300)
    return sent


def percentiles(latencies: list[float]) -> str:
    p50, p95, top = np.percentile(latencies, [50, 95, 100])
    return f"p50 {p50 * 1000:,.0f} ms, p95 {p95 * 1000:,.0f} ms, max {top * 1000:,.0f} ms"


def ceiling(broker: Mosquitto, messages: list[Message], rate: float) -> list[float]:
    """(a): publish -> receive through the broker alone."""
    target = MqttTarget(broker.url, broker.username, broker.password)
    received: dict[Key, float] = {}
    subscribed = threading.Event()
    client = mqtt_client(target, "bench-ceiling", persistent=True, manual_ack=True)

    def on_message(c: object, _u: object, message: object) -> None:
        body = json.loads(message.payload)
        received[key_of(body["machine_id"], body["timestamp"])] = time.time()
        client.ack(message.mid, message.qos)

    client.on_message, client.on_subscribe = on_message, lambda *_: subscribed.set()
    client.connect(*target.address())
    client.subscribe("plant/#", qos=1)
    client.loop_start()
    subscribed.wait(30)
    sent = publish_paced(target, messages, rate)
    deadline = time.monotonic() + 120
    while len(received) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.1)
    client.disconnect()
    client.loop_stop()
    return [received[k] - t for k, t in sent.items() if k in received]


def start_stream(broker: Mosquitto, settings: Settings, database_url: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")} | {
        "MFD_DATABASE_URL": database_url,
        "MFD_MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MFD_MODEL_NAME": MODEL_NAME,
        "MFD_HOME": str(settings.home),
        "MFD_MQTT_PASSWORD": broker.password,
    }
    command = [
        sys.executable,
        "-m",
        "mfd.cli.main",
        "stream",
        "--url",
        broker.url,
        "--username",
        broker.username,
    ]
    proc = subprocess.Popen(
        [*command, "--client-id", "bench-stream"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    for line in proc.stdout:  # the first line says it subscribed
        print(f"  {line.strip()}")
        break
    return proc


def stored_times(engine: sa.Engine, expected: int, stop_after: float) -> dict[Key, float]:
    """Poll the predictions every 0.1 s; the wall time each reading's prediction was first seen."""
    seen: dict[Key, float] = {}
    last, deadline = 0, time.monotonic() + stop_after
    query = sa.text(
        "SELECT r.id, r.machine_id, r.timestamp FROM predictions p JOIN readings r ON r.id = p.reading_id "
        "WHERE p.reading_id > :last ORDER BY r.id"
    )
    while len(seen) < expected and time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(query, {"last": last}).all()
        now = time.time()
        for reading_id, machine, stamp in rows:
            seen[key_of(machine, stamp)] = now
            last = max(last, reading_id)
        time.sleep(0.1)
    return seen


def stream(
    broker: Mosquitto, settings: Settings, database_url: str, messages: list[Message], rate: float
) -> list[float]:
    """(b): publish -> prediction stored through `mfd stream`."""
    engine = store.create_engine(database_url)
    store.ensure_tables(engine)
    proc = start_stream(broker, settings, database_url, settings.home / "stream.log")
    target = MqttTarget(broker.url, broker.username, broker.password)
    result: dict[str, dict[Key, float]] = {}
    watcher = threading.Thread(
        target=lambda: result.update(seen=stored_times(engine, len(messages), len(messages) / rate + 180))
    )
    watcher.start()
    sent = publish_paced(target, messages, rate)
    watcher.join()
    proc.send_signal(signal.SIGTERM)
    print(f"  {proc.stdout.read().strip()}")
    proc.wait(60)
    seen = result["seen"]
    return [seen[k] - t for k, t in sent.items() if k in seen]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000, help="readings per second (default 2,000)")
    parser.add_argument("--machines", type=int, default=200, help="machines (default 200: 10 Hz each)")
    parser.add_argument("--seconds", type=float, default=300, help="the stream's duration (default 300)")
    parser.add_argument("--ceiling-seconds", type=float, default=30, help="the broker-alone run (default 30)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mfd-bench-streaming-"))
    settings = Settings(home=root / "home")
    settings.home.mkdir(parents=True)
    try:
        with postgres_server() as pg, mosquitto_server() as broker:
            register_champion(settings)
            alone = ceiling(
                broker, fleet_messages(args.machines, args.rate, args.ceiling_seconds, 1), args.rate
            )
            print(
                f"(a) broker alone, publish -> receive, {len(alone):,} readings at {args.rate:,.0f}/s: {percentiles(alone)}"
            )
            messages = fleet_messages(args.machines, args.rate, args.seconds, 2)
            streamed = stream(broker, settings, pg.create_database("stream"), messages, args.rate)
            print(
                f"(b) mfd stream, publish -> prediction stored, {len(streamed):,} of {len(messages):,} readings at "
                f"{args.rate:,.0f}/s for {args.seconds:g} s: {percentiles(streamed)}"
            )
            ratio = np.percentile(streamed, 95) / np.percentile(alone, 95)
            verdict = "met" if np.percentile(streamed, 95) <= 2.0 else "NOT met"
            print(f"p95 stream / p95 broker alone: {ratio:,.1f}x; target p95 <= 2 s: {verdict}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
