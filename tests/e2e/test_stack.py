"""End to end on the production stack (`make stack`): generated CSV files in S3 are ingested by the daemon's
incoming_files_sensor, a selection and training_job are launched over GraphQL, a champion is promoted,
prediction_sensor scores every reading once, and the Bento service answers with the champion's version."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

import numpy as np
import pytest
import sqlalchemy as sa
from stack_helpers import ROWS_PER_FILE, Pipeline, RunningStack, generate, runs

pytestmark = pytest.mark.integration

READING = {
    "machine_type": "H",
    "air_temperature_k": 302.5,
    "process_temperature_k": 311.0,
    "rotational_speed_rpm": 1300,
    "torque_nm": 65.0,
    "tool_wear_min": 230,
}


def _keys(running: RunningStack, prefix: str) -> list[str]:
    listed = running.stack.s3_client().list_objects_v2(Bucket="mfd", Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []))


def _predict(running: RunningStack, key: str | None) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"http://127.0.0.1:{running.stack.ports.bento}/predict",
        data=json.dumps({"readings": [READING]}).encode(),
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_make_stack_starts_every_service_on_its_own_port(running_stack: RunningStack) -> None:
    out = running_stack.up_output
    assert "mfd stack up and healthy in" in out
    for url in running_stack.stack.urls().values():
        assert url in out
    ports = running_stack.stack.ports
    assert len({getattr(ports, name) for name in ports.__dataclass_fields__}) == len(
        ports.__dataclass_fields__
    )
    health = running_stack.stack.health()
    assert {name for name, ok in health.items() if ok} >= {
        "postgres",
        "s3",
        "mlflow",
        "dagster-webserver",
        "dagster-daemon",
    }
    again = running_stack.stack_cli("up")  # a second `make stack` finds it running
    assert "mfd stack up and healthy in" in again


def test_every_generated_reading_is_loaded_once_and_scored_once(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    assert pipeline.generated == 2 * ROWS_PER_FILE
    assert running.scalar("SELECT count(*) FROM readings") == pipeline.generated
    assert running.scalar("SELECT count(DISTINCT source) FROM readings") == len(pipeline.files) == 2
    assert _keys(running, "incoming/") == []
    assert _keys(running, "rejected/") == []
    assert len(_keys(running, "processed/")) == len(pipeline.files)
    assert running.scalar("SELECT count(*) FROM predictions") == pipeline.generated
    assert running.scalar("SELECT count(DISTINCT reading_id) FROM predictions") == pipeline.generated
    assert (
        running.scalar(
            "SELECT count(*) FROM readings r LEFT JOIN predictions p ON p.reading_id = r.id WHERE p.reading_id IS NULL"
        )
        == 0
    )
    versions = running.scalar("SELECT string_agg(DISTINCT model_version, ',') FROM predictions")
    assert versions == pipeline.champion
    failures = running.scalar("SELECT count(*) FROM predictions WHERE label = 1")
    assert running.scalar("SELECT count(*) FROM failure_events") == failures
    # Asset outputs went through the IO manager into the bucket, not onto the daemon's disk.
    stored = set(_keys(running, "dagster/"))
    assert {
        "dagster/training_set.parquet",
        "dagster/cleaned_set.parquet",
        "dagster/holdout.parquet",
        "dagster/candidate_model.pkl",
    } <= stored


def test_bento_serves_the_champion_and_requires_its_key(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    running.wait(running.stack.bento_ready, "bentoml serve of the champion is ready", timeout=180)
    key = running.env["MFD_API_KEYS"].split(",")[0]
    status, body = _predict(running, key)
    assert status == 200, body
    [prediction] = body
    assert prediction["model_name"] == running.env["MFD_MODEL_NAME"]
    assert prediction["model_version"] == pipeline.champion
    assert 0.0 <= prediction["probability"] <= 1.0
    status, _ = _predict(running, None)
    assert status == 401


def test_freshness_of_new_files_on_the_stack(running_stack: RunningStack, pipeline: Pipeline) -> None:
    """A new file after the champion exists: each reading scored once; reading written -> stored printed."""
    running = running_stack
    before = running.scalar("SELECT count(*) FROM readings")
    start = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    added = generate(running, ROWS_PER_FILE, 8, "--start", start)
    written = datetime.now(UTC)  # `mfd generate` has uploaded the file
    total = before + added
    running.wait(lambda: running.scalar("SELECT count(*) FROM predictions") == total, "new file scored", 240)
    assert running.scalar("SELECT count(*) FROM readings") == total
    engine = running.engine()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT p.scored_at FROM readings r JOIN predictions p ON p.reading_id = r.id WHERE r.id > :before"
            ),
            {"before": before},
        ).all()
    engine.dispose()
    assert len(rows) == added
    lags = np.array([(scored - written).total_seconds() for (scored,) in rows])
    print(
        f"\nfreshness on the stack (file written -> prediction stored), {added} readings: "
        f"p50 {np.percentile(lags, 50):.1f} s, p95 {np.percentile(lags, 95):.1f} s"
    )
    for job in ("ingest_readings_job", "prediction_job"):
        waits = [
            r["startTime"] - r["creationTime"] for r in runs(running, pipelineName=job) if r["startTime"]
        ]
        print(
            f"{job} requested -> started over {len(waits)} runs: median {np.median(waits):.1f} s, "
            f"max {max(waits):.1f} s"
        )
    assert (lags > 0).all()
