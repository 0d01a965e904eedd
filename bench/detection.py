"""Detection benchmark on a real PostgreSQL (`.venv/bin/python bench/detection.py`).

(a) Throughput: one prediction batch of --rows readings (COPY out, one model call, COPY + upsert in) against
    the seeds-style loop: one HTTP request to a per-row prediction endpoint and one INSERT per reading,
    measured on --http-rows of the same readings in the same run.
(b) Freshness (--freshness-minutes N): readings written continuously by the generator while the Dagster
    daemon runs prediction_sensor; p50/p95/max of (prediction stored - reading written).
(c) Shadow (--shadow-rows N): one batch scored by the champion and, into shadow_predictions, by a
    challenger in the same pass: rows per second for both together (target >= 50,000), beside the same
    batch scored by the champion alone into a second database with the same readings.
(d) Replay (--replay-rows N): the last days of N stored readings re-scored by challenger and champion with
    the replay figures (target: 1,000,000 readings <= 30 s).
(e) Window features (--windows-rows N): C-MAPSS profile (24 sensors), readings of 100 machines from the
    generic generator (no maintenance records); a
    first batch of N readings scored, then the timed batch of the next N, which reads its machines' history
    (first baseline and last max(window)-1 readings of each life) and stores probability and rul_estimate:
    readings/s with the profile's windows (5/15/30: 289 window features) beside the same profile without
    windows, each in a process of its own (the profile is per process), in the same run as (a)
    (target >= 50,000 readings/s with windows).
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
import urllib.request
from contextlib import contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO

import mlflow
import numpy as np
import pandas as pd
import sqlalchemy as sa
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from mfd.detection.batches import read_batch, score_batch
from mfd.detection.shadow import Challenger, challenger_policy
from mfd.generator import generate_readings, iter_readings, rechunk
from mfd.modeling.model_io import CHALLENGER, CHAMPION, FailureModel, load_model_version, log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry.champion import load_champion
from mfd.registry.replay import replay_models
from mfd.schema import LABEL_COLUMN
from mfd.services import free_port, postgres_server, stop_process_group
from mfd.services.postgres import Postgres
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.tables import ensure_detection_tables
from mfd.storage.tracking import connect, experiment_id

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "bench-detection"


def _register(settings: Settings, alias: str, max_iter: int, seed: int) -> str:
    """A HistGradientBoosting on AI4I registered under `alias` in the embedded MLflow store under MFD_HOME;
    its version."""
    client = connect(settings.tracking_uri)
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=max_iter, random_state=seed))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    with mlflow.start_run(experiment_id=experiment_id(client, "bench", settings.artifacts_dir.as_uri())):
        _, version = log_failure_model(pipeline, ai4i, registered_name=MODEL_NAME, threshold=0.5)
    client.set_registered_model_alias(MODEL_NAME, alias, version.version)
    return version.version


def register_champion(settings: Settings) -> None:
    """The bench's champion (HistGradientBoosting, 100 iterations)."""
    _register(settings, CHAMPION, max_iter=100, seed=0)


def champion_model(settings: Settings) -> FailureModel:
    return load_champion(
        settings.tracking_uri, MODEL_NAME, lambda: connect(settings.tracking_uri), settings.home
    ).model


@contextmanager
def prediction_endpoint(model: FailureModel):
    """POST /predict with one reading as JSON -> {"probability", "label"}: the seeds' inference service."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            reading = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with threadpool_limits(1):  # one row: thread start-up would dominate
                p = float(model.probability(pd.DataFrame([reading]))[0])
            body = json.dumps({"probability": p, "label": int(p >= model.threshold)}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/predict"
    finally:
        server.shutdown()
        server.server_close()


def seeds_loop(engine: sa.Engine, url: str, first_id: int, last_id: int) -> int:
    """Per reading: one HTTP call and one INSERT of its prediction (the seeds' scheduler)."""
    df = read_batch(engine, first_id, last_id)
    insert = sa.text(
        "INSERT INTO predictions (reading_id, model_name, model_version, probability, label, scored_at) "
        "VALUES (:i, 'seeds', '0', :p, :l, now()) ON CONFLICT (reading_id) DO NOTHING"
    )
    with engine.connect() as conn:
        for row in df[["id", *MODEL_INPUT_COLUMNS]].to_dict("records"):
            reading = {c: row[c] for c in MODEL_INPUT_COLUMNS}
            request = urllib.request.Request(
                url, json.dumps(reading).encode(), {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())
            conn.execute(insert, {"i": int(row["id"]), "p": answer["probability"], "l": answer["label"]})
            conn.commit()
    return len(df)


def throughput(pg_url: str, settings: Settings, rows: int, http_rows: int) -> None:
    engine = store.create_engine(pg_url)
    store.ensure_tables(engine)
    ensure_detection_tables(engine)
    store.insert_readings(engine, generate_readings(machines=100, rows=rows, seed=0))
    ids = store.read_readings(engine)["id"].to_numpy()
    model = champion_model(settings)
    print(f"(a) throughput: {len(ids):,} readings in PostgreSQL, champion {model.name} v{model.version}")

    rates = {}
    for attempt in ("first write", "re-run (upsert)"):
        t0 = time.perf_counter()
        result = score_batch(engine, model, int(ids[0]), int(ids[-1]))
        elapsed = time.perf_counter() - t0
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in result.seconds.items())
        print(
            f"  batch, {attempt}: {result.rows_scored:,} scored, {result.failures:,} failures in {elapsed:.2f}s "
            f"= {result.rows_scored / elapsed:,.0f} rows/s ({steps})"
        )
        rates[attempt] = result.rows_scored / elapsed
    batch_rate = rates["first write"]

    sample = ids[-http_rows:]
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM predictions WHERE reading_id >= :a"), {"a": int(sample[0])})
    with prediction_endpoint(model) as url:
        t0 = time.perf_counter()
        done = seeds_loop(engine, url, int(sample[0]), int(sample[-1]))
        elapsed = time.perf_counter() - t0
    seeds_rate = done / elapsed
    print(
        f"  seeds loop (HTTP call + INSERT per reading): {done:,} rows in {elapsed:.2f}s = {seeds_rate:,.0f} rows/s"
    )
    print(
        f"  ratio batch / seeds loop: {batch_rate / seeds_rate:,.0f}x; target >= 50,000 rows/s: "
        f"{'met' if batch_rate >= 50_000 else 'NOT met'}"
    )


def challenger_model(settings: Settings) -> FailureModel:
    """A smaller HistGradientBoosting registered under the `challenger` alias."""
    version = _register(settings, CHALLENGER, max_iter=50, seed=1)
    return load_model_version(connect(settings.tracking_uri), MODEL_NAME, version)


def shadow_throughput(pg: Postgres, settings: Settings, rows: int) -> None:
    readings = generate_readings(machines=100, rows=rows, seed=2)
    champion, model = champion_model(settings), challenger_model(settings)
    challenger = Challenger(model, challenger_policy(connect(settings.tracking_uri), MODEL_NAME, model))
    print(f"(c) shadow: {rows:,} readings, champion v{champion.version}, challenger v{model.version}")
    rates = {}
    # With the challenger first: the champion's explainer is warm from (a) in both.
    for name, shadow in (("champion + challenger", challenger), ("champion alone", None)):
        engine = store.create_engine(pg.create_database(name.replace(" ", "_").replace("+", "and")))
        store.ensure_tables(engine)
        store.insert_readings(engine, readings)
        ids = store.read_readings(engine)["id"].to_numpy()
        t0 = time.perf_counter()
        batch = score_batch(engine, champion, int(ids[0]), int(ids[-1]), challenger=shadow)
        elapsed = time.perf_counter() - t0
        rates[name] = batch.rows_scored / elapsed
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in batch.seconds.items())
        shadowed = f", {batch.shadow.rows_scored:,} shadow rows" if batch.shadow is not None else ""
        print(
            f"  {name}: {batch.rows_scored:,} scored{shadowed} in {elapsed:.2f}s = {rates[name]:,.0f} rows/s "
            f"({steps})"
        )
    rate = rates["champion + challenger"]
    print(
        f"  ratio with / without the challenger: {rate / rates['champion alone']:.2f}; target >= 50,000 "
        f"rows/s for both: {'met' if rate >= 50_000 else 'NOT met'}"
    )


def replay_speed(pg_url: str, settings: Settings, rows: int) -> None:
    engine = store.create_engine(pg_url)
    store.ensure_tables(engine)
    t0 = time.perf_counter()
    for chunk in rechunk(iter_readings(machines=100, rows=rows, seed=3), 200_000):
        store.insert_readings(engine, chunk)
    print(f"(d) replay: {rows:,} readings stored in {time.perf_counter() - t0:.1f}s")
    models = {"challenger": challenger_model(settings), "champion": champion_model(settings)}
    t0 = time.perf_counter()
    replay = replay_models(engine, models, days=3650, horizon=pd.Timedelta("2h"))
    elapsed = time.perf_counter() - t0
    steps = ", ".join(f"{k} {v:.2f}s" for k, v in replay.seconds.items())
    print(replay.table.to_string())
    print(
        f"  replay of {replay.readings:,} readings with 2 models in {elapsed:.1f}s ({steps}); target <= 30 s "
        f"for 1,000,000: {'met' if elapsed <= 30 * replay.readings / 1_000_000 else 'NOT met'}"
    )


def instance_yaml(home: Path) -> None:
    """The production dagster.yaml (PostgreSQL storage, QueuedRunCoordinator) in a temp DAGSTER_HOME."""
    home.mkdir(parents=True)
    shutil.copy(REPO / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")


def processes_of_instance(dagster_home: Path) -> list[str]:
    """`pid command` of every live process started with DAGSTER_HOME=`dagster_home` (the daemon, its code
    servers and runs), in or out of the daemon's process group."""
    marker = f"DAGSTER_HOME={dagster_home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        try:
            alive = entry.name.isdigit() and (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
            if alive and marker in (entry / "environ").read_bytes().split(b"\0"):
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append(f"{entry.name} {command}")
        except OSError:  # gone meanwhile, or not ours
            continue
    return found


def _daemon(pg: Postgres, settings: Settings, url: str, dagster_db: str, log: IO[bytes]) -> subprocess.Popen:
    """`dagster-daemon run` on the instance under settings.home/dagster, reading `url` with the bench's model."""
    env = dict(
        os.environ,
        DAGSTER_HOME=str(settings.home / "dagster"),
        MFD_HOME=str(settings.home),
        MFD_DATABASE_URL=url,
        MFD_MODEL_NAME=MODEL_NAME,
        MFD_DAGSTER_PG_HOST=pg.host,
        MFD_DAGSTER_PG_PORT=str(pg.port),
        MFD_DAGSTER_PG_USER=pg.user,
        MFD_DAGSTER_PG_PASSWORD="",
        MFD_DAGSTER_PG_DB=dagster_db.rsplit("/", 1)[1],
    )
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


class _Writer:
    """Blocks of `rate` readings (one per second of the stream) written into `engine`; (ids, commit time)
    per block."""

    def __init__(self, engine: sa.Engine, rate: float) -> None:
        self.engine, self.written, self.last_id = engine, [], 0
        self.blocks = rechunk(
            iter_readings(machines=20, rows=None, seed=1, start=datetime.now(UTC), interval_s=1.0),
            max(1, round(rate)),
        )

    def write_block(self) -> None:
        store.insert_readings(self.engine, next(self.blocks))
        committed = time.time()
        with self.engine.connect() as conn:
            query = sa.text("SELECT id FROM readings WHERE id > :a ORDER BY id")
            ids = conn.execute(query, {"a": self.last_id}).scalars().all()
        self.written.append((ids, committed))
        self.last_id = ids[-1]

    def scored_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.text("SELECT count(*) FROM predictions")).scalar_one())


def _stream(writer: _Writer, daemon: subprocess.Popen, settings: Settings, minutes: float) -> int:
    """Write a block per second for `minutes` once the first batch is scored, then wait (<= 180 s) for the
    rest to be scored; the number of warm-up blocks."""
    print(f"(b) freshness: dagster-daemon pid {daemon.pid}; warming up until the first batch is scored")
    writer.write_block()
    t0 = time.time()
    while writer.scored_count() == 0:
        if daemon.poll() is not None or time.time() - t0 > 300:
            raise SystemExit(f"no prediction within 300 s; see {settings.home / 'daemon.log'}")
        time.sleep(1)
    print(f"  first batch scored {time.time() - t0:.0f}s after the daemon started; measuring {minutes} min")
    warm = len(writer.written)
    end = time.time() + minutes * 60
    while time.time() < end:
        tick = time.time()
        writer.write_block()
        time.sleep(max(0.0, 1.0 - (time.time() - tick)))
    deadline = time.time() + 180
    while time.time() < deadline and writer.scored_count() < sum(len(ids) for ids, _ in writer.written):
        time.sleep(2)
    return warm


def _stop_daemon(daemon: subprocess.Popen, dagster_home: Path) -> None:
    """SIGINT to the daemon's whole group (dagster stops cleanly on it), waiting for its code server too;
    any process of its instance left is killed and named."""
    stop_process_group(daemon, signal.SIGINT, timeout=60)
    left = processes_of_instance(dagster_home)
    if left:
        for process in left:
            os.kill(int(process.split()[0]), signal.SIGKILL)
        raise SystemExit(f"processes of the daemon's instance left after stopping it (killed): {left}")
    print(f"  dagster-daemon stopped: no process of {dagster_home} left")


def _report_lag(engine: sa.Engine, written: list, minutes: float, rate: float) -> None:
    """p50/p95/max of (prediction stored - reading written) over the measured blocks."""
    with engine.connect() as conn:
        stored = pd.read_sql(sa.text("SELECT reading_id, scored_at FROM predictions"), conn)
    stored["scored_at"] = pd.to_datetime(stored["scored_at"], utc=True).astype("int64") / 1e9
    written_at = pd.concat([pd.DataFrame({"reading_id": ids, "written_at": t}) for ids, t in written])
    joined = written_at.merge(stored, on="reading_id", how="left")
    lag = (joined["scored_at"] - joined["written_at"]).dropna()
    runs = joined["scored_at"].nunique()
    print(
        f"  {len(joined):,} readings written over {minutes} min ({rate:g}/s), {len(lag):,} scored in {runs} runs, "
        f"{joined['scored_at'].isna().sum()} never scored"
    )
    if lag.empty:
        print("  no reading was scored in the window: target p95 <= 40 s NOT met (run >= 5 minutes)")
        return
    p50, p95 = np.percentile(lag, [50, 95])
    print(
        f"  prediction stored - reading written: p50 {p50:.1f}s  p95 {p95:.1f}s  max {lag.max():.1f}s; "
        f"target p95 <= 40 s: {'met' if p95 <= 40 else 'NOT met'}"
    )


def _report_runs(dagster_db: str) -> None:
    """Launch and execution times of the prediction_job runs."""
    with sa.create_engine(dagster_db).connect() as conn:
        runs = pd.read_sql(
            sa.text(
                "SELECT start_time - extract(epoch FROM create_timestamp AT TIME ZONE 'UTC') AS launch, "
                "end_time - start_time AS execution FROM runs "
                "WHERE pipeline_name = 'prediction_job' AND end_time IS NOT NULL"
            ),
            conn,
        )
    print(
        f"  prediction_job runs: {len(runs)}; requested -> started (queue, process, imports) median "
        f"{runs['launch'].median():.1f}s max {runs['launch'].max():.1f}s; started -> finished median "
        f"{runs['execution'].median():.1f}s max {runs['execution'].max():.1f}s"
    )


def freshness(pg: Postgres, settings: Settings, minutes: float, rate: float) -> None:
    """(b): readings written at `rate`/s for `minutes` while the daemon's prediction_sensor scores them."""
    url = pg.create_database("freshness")
    dagster_db = pg.create_database("dagster")
    engine = store.create_engine(url)
    store.ensure_tables(engine)
    ensure_detection_tables(engine)
    writer = _Writer(engine, rate)
    instance_yaml(settings.home / "dagster")  # creates settings.home too
    with (settings.home / "daemon.log").open("wb") as log:
        daemon = _daemon(pg, settings, url, dagster_db, log)
        try:
            warm = _stream(writer, daemon, settings, minutes)
        finally:
            _stop_daemon(daemon, settings.home / "dagster")
    _report_lag(engine, writer.written[warm:], minutes, rate)
    _report_runs(dagster_db)


def windows_child(pg_url: str, rows: int, home: Path) -> None:
    """(e), in a process of its own profile: store 2 x `rows` readings, register a HistGradientBoosting
    trained on the first `rows` (a ~1 % label made from one sensor: the bench times scoring, not quality),
    score the first `rows` as one batch, then time the next `rows`. Prints one JSON line."""
    from mfd.features import WINDOW_COLUMNS, add_windows
    from mfd.generator.generic import generate_generic
    from mfd.schema import PROFILE, SENSOR_COLUMNS

    settings = Settings(home=home)
    engine = store.create_engine(pg_url)
    store.ensure_tables(engine)
    ensure_detection_tables(engine)
    store.insert_readings(engine, generate_generic(machines=100, rows=2 * rows, seed=4).readings)
    ids = store.read_readings(engine)["id"].to_numpy()
    train = add_windows(read_batch(engine, int(ids[0]), int(ids[rows - 1])))
    label = (train[SENSOR_COLUMNS[5]] > train[SENSOR_COLUMNS[5]].quantile(0.99)).astype(int)  # ~1 % alarms
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=100, random_state=0)).fit(train, label)
    client = connect(settings.tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id(client, "bench", settings.artifacts_dir.as_uri())):
        _, version = log_failure_model(pipeline, train, registered_name=MODEL_NAME, threshold=0.5)
    model = load_model_version(client, MODEL_NAME, version.version)
    score_batch(engine, model, int(ids[0]), int(ids[rows - 1]))
    t0, cpu = time.perf_counter(), time.process_time()
    result = score_batch(engine, model, int(ids[rows]), int(ids[-1]))
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu
    out = {
        "cpu_seconds": cpu,
        "profile": PROFILE.name,
        "window_features": len(WINDOW_COLUMNS),
        "scored": result.rows_scored,
        "seconds": elapsed,
        "steps": {k: round(v, 3) for k, v in result.seconds.items()},
    }
    print(json.dumps(out))


def windows_throughput(pg: Postgres, rows: int, root: Path) -> None:
    """(e): the C-MAPSS profile with and without its windows, each in a child process."""
    plain = root / "cmapss-no-windows.yaml"
    text = (REPO / "mfd" / "profiles" / "cmapss.yaml").read_text()
    plain.write_text("\n".join(line for line in text.splitlines() if not line.startswith("windows:")) + "\n")
    print(f"(e) window features: C-MAPSS profile, {rows:,} readings scored after {rows:,} (100 machines)")
    rates = {}
    for name, profile in (("with windows", "cmapss"), ("without windows", str(plain))):
        env = dict(os.environ, MFD_PROFILE=profile, MFD_HOME=str(root / name.replace(" ", "-")))
        url = pg.create_database(name.replace(" ", "_"))
        args = [sys.executable, __file__, "--windows-child", url, "--windows-rows", str(rows)]
        done = subprocess.run(args, env=env, capture_output=True, text=True, cwd=REPO)
        if done.returncode:
            raise SystemExit(f"(e) {name} failed:\n{done.stderr[-3000:]}")
        out = json.loads(done.stdout.strip().splitlines()[-1])
        rates[name] = out["scored"] / out["seconds"]
        steps = ", ".join(f"{k} {v:.2f}s" for k, v in out["steps"].items())
        print(
            f"  {name} ({out['window_features']} window features): {out['scored']:,} scored and stored in "
            f"{out['seconds']:.2f}s = {rates[name]:,.0f} readings/s ({steps}); this process's CPU "
            f"{out['cpu_seconds']:.2f}s = {out['scored'] / out['cpu_seconds']:,.0f} readings per CPU-second"
        )
    rate = rates["with windows"]
    print(
        f"  ratio with / without windows: {rate / rates['without windows']:.2f}; target >= 50,000 readings/s "
        f"with windows: {'met' if rate >= 50_000 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="readings in the throughput batch")
    parser.add_argument("--http-rows", type=int, default=2_000, help="readings through the seeds-style loop")
    parser.add_argument("--freshness-minutes", type=float, default=0, help="run (b) for this long (>= 5)")
    parser.add_argument("--rate", type=float, default=20, help="(b) readings written per second")
    parser.add_argument("--shadow-rows", type=int, default=0, help="run (c) on this many readings")
    parser.add_argument("--replay-rows", type=int, default=0, help="run (d) on this many readings")
    parser.add_argument("--windows-rows", type=int, default=0, help="run (e) on this many readings")
    parser.add_argument("--windows-child", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--skip-throughput", action="store_true", help="skip (a)")
    args = parser.parse_args()
    if args.windows_child:
        windows_child(args.windows_child, args.windows_rows, Path(os.environ["MFD_HOME"]))
        return
    root = Path(tempfile.mkdtemp(prefix="mfd-bench-detection-"))
    settings = Settings(home=root / "home")
    try:
        with postgres_server() as pg:
            if not args.skip_throughput:
                register_champion(settings)
                throughput(pg.create_database("throughput"), settings, args.rows, args.http_rows)
            if args.windows_rows > 0:
                windows_throughput(pg, args.windows_rows, root)
            if args.freshness_minutes > 0:
                freshness(pg, settings, args.freshness_minutes, args.rate)
            if args.shadow_rows > 0:
                shadow_throughput(pg, settings, args.shadow_rows)
            if args.replay_rows > 0:
                replay_speed(pg.create_database("replay"), settings, args.replay_rows)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
