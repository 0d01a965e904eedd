"""Backlog and fairness on the stack (issue 24): `.venv/bin/python bench/backlog.py [--rows 2850000]`.

Starts the production stack (`python -m mfd.services.stack up`, as `make stack` does, in a temporary
directory on free ports, like tests/e2e/stack_helpers.py), registers a champion, drops one big CSV file
(`--rows` readings) into `incoming/`, and once its backlog is being scored drops a small one (`--small`
readings). Prints:

- the backlog's readings/s end to end: the big file's readings over the time from their load committing
  (the readings visible) to the last prediction stored;
- the small file's time from upload to scored, and how much of the backlog was still unscored then;
- where the backlog's time went: per prediction run, the wait in the queue, the launch (created -> started),
  the asset's own time (`latency_s`) split into read / score / explain / write, and the rest of the run;
- the baseline measured in the same run: the same readings scored in this process by `score_batch`
  (`--baseline-rows` of them), and the ratio end to end / in process.

The issue's target: >= 20,000 readings/s end to end, the 1,500-row file scored within 60 s.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import mlflow  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from stack_helpers import RunningStack, _free_ports, runs  # noqa: E402

from mfd.detection.batches import score_batch  # noqa: E402
from mfd.modeling.model_io import CHAMPION, log_failure_model  # noqa: E402
from mfd.modeling.pipeline import build_pipeline  # noqa: E402
from mfd.profiles.ai4i_reference import load_ai4i  # noqa: E402
from mfd.registry.champion import load_champion  # noqa: E402
from mfd.schema import LABEL_COLUMN  # noqa: E402
from mfd.services.stack import Stack  # noqa: E402
from mfd.storage.tracking import connect, experiment_id  # noqa: E402

MODEL = "mfd-bench-backlog"
EVENTS = """
query Events($key: AssetKeyInput!, $limit: Int!) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(limit: $limit) {
        runId
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
          ... on JsonMetadataEntry { jsonString }
        }
      }
    }
  }
}
"""


def register_champion(running: RunningStack) -> str:
    """A 100-iteration HistGradientBoosting on AI4I as the stack's champion; its version."""
    os.environ.update(running.env)
    uri = running.env["MFD_MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    client = connect(uri)
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=100, random_state=0))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    with mlflow.start_run(experiment_id=experiment_id(client, "bench-backlog", None)):
        _, version = log_failure_model(pipeline, ai4i, registered_name=MODEL, threshold=0.5)
    client.set_registered_model_alias(MODEL, CHAMPION, version.version)
    return version.version


def drop_file(running: RunningStack, rows: int, seed: int, start: datetime, machines: int) -> float:
    """`mfd generate` one CSV file of `rows` readings into incoming/; the time it returned (monotonic)."""
    running.mfd(
        "generate",
        *("--machines", str(machines), "--rows", str(rows), "--seed", str(seed)),
        *("--sink", "files", "--file-rows", str(rows), "--quiet"),
        *("--start", start.strftime("%Y-%m-%dT%H:%M:%SZ"), "--interval", "1"),
        timeout=3600,
    )
    return time.monotonic()


def idle(running: RunningStack) -> bool:
    """No run queued or in progress (the champion's bento build and the like are done)."""
    busy = ["QUEUED", "NOT_STARTED", "STARTING", "STARTED"]
    return not runs(running, statuses=busy)


def prediction_profile(running: RunningStack, first_id: int, last_id: int) -> list[dict]:
    """Per prediction run over [first_id, last_id]: rows, queue, launch and run seconds from the run record,
    the asset's latency and its steps from the materialization's metadata."""
    data = running.graphql()._execute(  # noqa: SLF001
        EVENTS, {"key": {"path": ["prediction_batches"]}, "limit": 500}
    )
    metadata = {}
    for event in data["assetOrError"]["assetMaterializations"]:
        entries = {
            e["label"]: e.get("intValue", e.get("floatValue", e.get("jsonString")))
            for e in event["metadataEntries"]
        }
        metadata[event["runId"]] = entries
    out = []
    for run in runs(running, pipelineName="prediction_job", statuses=["SUCCESS"]):
        meta = metadata.get(run["runId"], {})
        if not meta or int(meta["first_id"]) > last_id or int(meta["last_id"]) < first_id:
            continue
        steps = json.loads(meta.get("seconds_by_step") or "{}")
        out.append(
            {
                "lane": run["tags"].get("mfd/lane", ""),
                "rows": int(meta["rows_read"]),
                "queued_s": round(run["startTime"] - run["creationTime"], 1),
                "run_s": round(run["endTime"] - run["startTime"], 1),
                "asset_s": round(float(meta["latency_s"]), 1),
                **{f"{k}_s": round(v, 1) for k, v in steps.items()},
            }
        )
    return sorted(out, key=lambda r: r["rows"], reverse=True)


def in_process(running: RunningStack, first_id: int, rows: int, home: Path) -> tuple[int, dict[str, float]]:
    """The baseline: `rows` of the backlog's readings scored again by the champion in this process
    (`score_batch`, the same upserts a run does); rows scored and seconds per step."""
    uri = running.env["MFD_MLFLOW_TRACKING_URI"]
    champion = load_champion(uri, MODEL, lambda: connect(uri), home)
    engine = running.engine()
    try:
        result = score_batch(engine, champion.model, first_id, first_id + rows - 1, champion.policy)
    finally:
        engine.dispose()
    return result.rows_read, result.seconds


def measure(running: RunningStack, args: argparse.Namespace) -> dict[str, object]:
    """Drop the big file, then the small one while the backlog is being scored; the figures."""
    now = datetime.now(UTC)
    first_big = int(running.scalar("SELECT coalesce(max(id), 0) FROM readings")) + 1
    big_start = now - timedelta(seconds=args.rows / args.machines + 3600)
    dropped = drop_file(running, args.rows, 11, big_start, args.machines)
    running.wait(
        lambda: running.scalar("SELECT count(*) FROM readings") >= args.rows, "the big file loaded", 3600
    )
    loaded, loaded_at = time.monotonic(), datetime.now(UTC)
    last_big = int(running.scalar("SELECT max(id) FROM readings"))
    running.wait(
        lambda: [r for r in runs(running, pipelineName="prediction_job", statuses=["STARTED"])],
        "a prediction run started on the backlog",
        600,
    )
    small_dropped = drop_file(running, args.small, 12, now + timedelta(hours=1), 10)
    small_rows = f"SELECT count(*) FROM predictions WHERE reading_id > {last_big}"
    running.wait(lambda: running.scalar(small_rows) >= args.small, "the small file scored", 3600)
    small_s = time.monotonic() - small_dropped
    unscored = (
        f"SELECT count(*) FROM readings r WHERE r.id BETWEEN {first_big} AND {last_big} "
        "AND NOT EXISTS (SELECT 1 FROM predictions p WHERE p.reading_id = r.id)"
    )
    waiting = int(running.scalar(unscored))
    running.wait(lambda: running.scalar(unscored) == 0, "the backlog scored", 7200)
    last_scored = running.scalar(
        f"SELECT max(scored_at) FROM predictions WHERE reading_id BETWEEN {first_big} AND {last_big}"
    )
    backlog_s = (last_scored - loaded_at).total_seconds()
    return {
        "rows": last_big - first_big + 1,
        "first_id": first_big,
        "last_id": last_big,
        "upload_to_loaded_s": round(loaded - dropped, 1),
        "backlog_s": round(backlog_s, 1),
        "backlog_readings_per_s": round((last_big - first_big + 1) / backlog_s),
        "small_rows": args.small,
        "small_upload_to_scored_s": round(small_s, 1),
        "backlog_unscored_when_small_scored": waiting,
    }


def prepared(root: Path) -> RunningStack:
    """The stack of `root` on free ports (the e2e tests' way), not started yet."""
    stack = Stack(root, _free_ports(), MODEL)
    env = {key: value for key, value in os.environ.items() if key != "MFD_API_KEYS"}
    env.update(stack.env())
    env["MFD_RETRAIN_NEW_LABELS"] = "1000000000"  # no retraining on the generated labels mid-bench
    running = RunningStack(stack, env, "", root / "operator")
    running.workdir.mkdir()
    return running


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=2_850_000, help="readings in the big file")
    parser.add_argument("--machines", type=int, default=100, help="machines in the big file")
    parser.add_argument("--small", type=int, default=1_500, help="readings in the small file")
    parser.add_argument("--baseline-rows", type=int, default=500_000, help="readings scored in process")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mfd-bench-backlog-"))
    os.chmod(root, 0o755)  # PostgreSQL runs as the `postgres` user and walks into it
    running = prepared(root)
    try:
        running.up_output = running.stack_cli("up")  # `down` below even when `up` fails half-way
        print(f"champion v{register_champion(running)}", flush=True)
        running.wait(lambda: idle(running), "no run in progress after the champion", 900)
        figures = measure(running, args)
        print(json.dumps(figures, indent=1), flush=True)
        # A run's alarms step follows its predictions: the last backlog run is still STARTED when they are in.
        running.wait(lambda: idle(running), "the backlog's runs finished", 900)
        profile = prediction_profile(running, int(figures["first_id"]), int(figures["last_id"]))
        print("prediction runs over the backlog (largest first):")
        for row in profile:
            print("  " + json.dumps(row))
        rows, seconds = in_process(
            running, int(figures["first_id"]), min(args.baseline_rows, args.rows), root
        )
        rate = rows / sum(seconds.values())
        print(
            f"in process: {rows:,} readings in {sum(seconds.values()):.1f} s ({rate:,.0f}/s): "
            + json.dumps({k: round(v, 2) for k, v in seconds.items()})
        )
        print(
            f"backlog end to end {figures['backlog_readings_per_s']:,}/s = "
            f"{figures['backlog_readings_per_s'] / rate:.2f} x in process (target 20,000/s); small file "
            f"{figures['small_upload_to_scored_s']} s (target 60 s); load {os.getloadavg()[0]:.1f}"
        )
    finally:
        subprocess.run(
            [sys.executable, "-m", "mfd.services.stack", "down"], env=running.env, cwd=REPO, timeout=300
        )
        if running.stack.log.exists():
            shutil.copy(running.stack.log, Path(tempfile.gettempdir()) / "bench-backlog-stack.log")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
