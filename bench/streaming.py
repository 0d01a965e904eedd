"""Streaming benchmark on 127.0.0.1 (`.venv/bin/python bench/streaming.py`): a real Mosquitto and PostgreSQL.

(a) Ceiling: the broker alone with the same client (paho-mqtt, QoS 1): a fleet published at --rate readings/s
    for --ceiling-seconds, publish -> receive latency per reading at a subscriber.
(b) The stream: the same fleet at the same rate for --seconds into `mfd stream` (a child process, persistent
    session, manual ack): publish -> prediction stored latency per reading, "stored" meaning visible to a
    reader (the bench polls the predictions every 0.1 s, so figures carry up to ~0.1 s of polling), and
    the consumer's CPU seconds per thread (--profile: cProfile of its main thread into a file).
(c) The file path, after the stream stopped: --files CSV files of --file-readings readings dropped into
    incoming/ every --file-every s while `dagster-daemon` runs the product's sensors and jobs (the production
    dagster.yaml, as bench/detection.py's freshness): drop -> prediction stored per reading.
Printed: p50/p95/max of each, the stream's p95 over the broker's (target: stream p95 <= 2 s) and the file
path's p95 over the stream's.
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

from mfd.generator import generate_readings, readings_csv
from mfd.generator.mqtt import MqttPublisher, MqttTarget, mqtt_client, reading_payloads
from mfd.modeling.model_io import CHAMPION, log_failure_model
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN, PROFILE
from mfd.services import Postgres, postgres_server
from mfd.services.mosquitto import Mosquitto, mosquitto_server
from mfd.services.processes import stop_process_group
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.tracking import connect, experiment_id

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests" / "streaming")]
from detection import instance_yaml, processes_of_instance  # noqa: E402 - bench/detection.py's daemon helpers
from streaming_helpers import child_env  # noqa: E402 - the stream tests' child environment

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


def start_stream(
    broker: Mosquitto, settings: Settings, database_url: str, log: Path, profile: Path | None = None
) -> subprocess.Popen:
    env = child_env(database_url, settings.tracking_uri, MODEL_NAME, settings.home)
    env["MFD_MQTT_PASSWORD"] = broker.password
    profiler = ["-m", "cProfile", "-o", str(profile)] if profile else []
    command = [
        sys.executable,
        *profiler,
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


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of `pid`, by thread id, from /proc."""
    ticks, out = os.sysconf("SC_CLK_TCK"), {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / ticks
    return out


def cpu_since(pid: int, before: dict[int, float]) -> str:
    """Each thread's CPU seconds since `before` (the main thread first, then by amount; >= 0.1 s)."""
    now = thread_cpu(pid)
    spent = {t: s - before.get(t, 0.0) for t, s in now.items()}
    order = sorted(spent, key=lambda t: (t != pid, -spent[t]))
    return ", ".join(f"{spent[t]:.1f}" for t in order if spent[t] >= 0.1)


def stream(
    broker: Mosquitto,
    settings: Settings,
    database_url: str,
    messages: list[Message],
    rate: float,
    profile: Path | None = None,
) -> list[float]:
    """(b): publish -> prediction stored through `mfd stream`."""
    engine = store.create_engine(database_url)
    store.ensure_tables(engine)
    proc = start_stream(broker, settings, database_url, settings.home / "stream.log", profile)
    subscribed = thread_cpu(proc.pid)  # start-up (imports, the champion, SHAP) left out
    target = MqttTarget(broker.url, broker.username, broker.password)
    result: dict[str, dict[Key, float]] = {}
    watcher = threading.Thread(
        target=lambda: result.update(seen=stored_times(engine, len(messages), len(messages) / rate + 180))
    )
    watcher.start()
    sent = publish_paced(target, messages, rate)
    watcher.join()
    print(
        f"  mfd stream's CPU seconds by thread since it subscribed (main first): {cpu_since(proc.pid, subscribed)}"
    )
    proc.send_signal(signal.SIGTERM)
    print(f"  {proc.stdout.read().strip()}")
    proc.wait(60)
    seen = result["seen"]
    return [seen[k] - t for k, t in sent.items() if k in seen]


def scored_keys(engine: sa.Engine) -> dict[Key, float]:
    """Every scored reading's key with the time of this look (the file path's readings are few)."""
    query = "SELECT r.machine_id, r.timestamp FROM predictions p JOIN readings r ON r.id = p.reading_id"
    with engine.connect() as conn:
        rows = conn.execute(sa.text(query)).all()
    now = time.time()
    return {key_of(machine, stamp): now for machine, stamp in rows}


def drop_file(incoming: Path, name: str, frame: pd.DataFrame) -> None:
    """A CSV of `frame`'s readings (no labels) into incoming/, written aside and renamed in whole."""
    columns = ["machine_id", "timestamp", "machine_type", *PROFILE.sensor_columns]
    staged = incoming.parent / f".{name}"
    staged.write_bytes(readings_csv(frame[columns], PROFILE))
    os.replace(staged, incoming / name)


def daemon_env(pg: Postgres, settings: Settings, database_url: str, dagster_home: Path) -> dict[str, str]:
    dagster_db = pg.create_database("dagster")
    return child_env(database_url, settings.tracking_uri, MODEL_NAME, settings.home) | {
        "DAGSTER_HOME": str(dagster_home),
        # deploy/dagster/stack_run_launcher.py, the production instance's run launcher (as `make stack`)
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "deploy" / "dagster"), os.environ.get("PYTHONPATH")])
        ),
        "MFD_DAGSTER_PG_HOST": pg.host,
        "MFD_DAGSTER_PG_PORT": str(pg.port),
        "MFD_DAGSTER_PG_USER": pg.user,
        "MFD_DAGSTER_PG_PASSWORD": "",
        "MFD_DAGSTER_PG_DB": dagster_db.rsplit("/", 1)[1],
    }


def file_path(pg: Postgres, settings: Settings, files: int, every: float, per_file: int) -> list[float]:
    """(c): CSV files dropped into incoming/ every `every` s while `dagster-daemon` runs the product's
    sensors (incoming_files_sensor -> ingestion run -> prediction_sensor -> prediction run): drop ->
    prediction stored latency per reading. A first file warms the daemon up and is not counted."""
    url = pg.create_database("files")
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    dagster_home = settings.home / "dagster"
    instance_yaml(dagster_home)
    incoming = settings.objects_dir / "incoming"
    incoming.mkdir(parents=True, exist_ok=True)
    log = (settings.home / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=daemon_env(pg, settings, url, dagster_home),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    machines = max(1, min(200, per_file))
    frames = [
        generate_readings(
            machines, per_file, 10 + i, datetime.now(UTC).replace(microsecond=0), interval_s=1.0
        )
        for i in range(files + 1)
    ]
    dropped: dict[Key, float] = {}
    try:
        drop_file(incoming, "warm-up.csv", frames[0])
        started, warm = (
            time.time(),
            {key_of(m, t) for m, t in zip(frames[0]["machine_id"], frames[0]["timestamp"], strict=True)},
        )
        while not warm <= scored_keys(engine).keys():
            if daemon.poll() is not None or time.time() - started > 600:
                tail = (settings.home / "daemon.log").read_text(errors="replace")[-3000:]
                raise SystemExit(f"warm-up file not scored within 600 s; the daemon's log ends:\n{tail}")
            time.sleep(1)
        print(f"  warm-up file scored {time.time() - started:.0f} s after the daemon started")
        seen: dict[Key, float] = {}
        for i, frame in enumerate(frames[1:]):
            at = time.time()
            drop_file(incoming, f"readings-{i:03d}.csv", frame)
            dropped |= {
                key_of(m, t): at for m, t in zip(frame["machine_id"], frame["timestamp"], strict=True)
            }
            while time.time() < at + every:
                seen = scored_keys(engine) | seen
                time.sleep(0.5)
        deadline = time.time() + 300
        while not dropped.keys() <= seen.keys() and time.time() < deadline:
            seen = scored_keys(engine) | seen
            time.sleep(0.5)
    finally:
        stop_process_group(daemon, signal.SIGINT, timeout=60)
        log.close()
        for process in processes_of_instance(dagster_home):
            os.kill(int(process.split()[0]), signal.SIGKILL)
    found = [seen[k] - t for k, t in dropped.items() if k in seen]
    total = sum(len(f) for f in frames[1:])
    print(
        f"  (c) {len(dropped):,} distinct readings (by machine and time) in {total:,} rows; {len(found):,} seen stored"
    )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=2000, help="readings per second (default 2,000)")
    parser.add_argument("--machines", type=int, default=200, help="machines (default 200: 10 Hz each)")
    parser.add_argument("--seconds", type=float, default=300, help="the stream's duration (default 300)")
    parser.add_argument("--profile", type=Path, help="cProfile the consumer's main thread into this file")
    parser.add_argument("--files", type=int, default=12, help="(c) files dropped into incoming/ (0: skip)")
    parser.add_argument("--file-every", type=float, default=10, help="(c) seconds between files")
    parser.add_argument("--file-readings", type=int, default=2000, help="(c) readings per file")
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
            streamed = stream(
                broker, settings, pg.create_database("stream"), messages, args.rate, args.profile
            )
            print(
                f"(b) mfd stream, publish -> prediction stored, {len(streamed):,} of {len(messages):,} readings at "
                f"{args.rate:,.0f}/s for {args.seconds:g} s: {percentiles(streamed)}"
            )
            ratio = np.percentile(streamed, 95) / np.percentile(alone, 95)
            verdict = "met" if np.percentile(streamed, 95) <= 2.0 else "NOT met"
            print(f"p95 stream / p95 broker alone: {ratio:,.1f}x; target p95 <= 2 s: {verdict}")
            if args.files > 0:
                filed = file_path(pg, settings, args.files, args.file_every, args.file_readings)
                print(
                    f"(c) file path (incoming/ CSV -> incoming_files_sensor -> ingestion run -> prediction_sensor "
                    f"-> prediction run, dagster-daemon), drop -> prediction stored, {len(filed):,} readings in "
                    f"{args.files} files of {args.file_readings:,} every {args.file_every:g} s: {percentiles(filed)}"
                )
                print(
                    f"p95 file path / p95 stream: {np.percentile(filed, 95) / np.percentile(streamed, 95):,.1f}x"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
