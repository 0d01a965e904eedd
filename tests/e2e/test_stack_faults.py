"""Faults on the running stack (after the happy path): the S3 server down for 60 s while files arrive,
PostgreSQL crashing under running ingestion runs, `bentoml serve` killed, and MLflow down. Services are
stopped the way they fail (SIGKILL) and held down by their supervisor (`python -m mfd.services.stack
hold|release <service>`); counts stay exact."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from stack_helpers import (
    ROWS_PER_FILE,
    Pipeline,
    RunningStack,
    asset_events,
    generate,
    launch,
    runs,
    wait_for_run,
)

from mfd.services.stack import hold, release

pytestmark = pytest.mark.integration

# Longer than Dagster's and mfd's connection retries (~6 s): the runs in flight fail and are retried. The
# outage itself is what the test is about (a fixed length); the wait after it is for the retried runs.
PG_DOWN_S = 15
IN_FLIGHT = ["STARTING", "STARTED"]
SENSORS_QUERY = """
query { repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name sensorState { status } } } } } }
"""
RUN_FAILURE_QUERY = """
query Failures($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status
      eventConnection(afterCursor: null) {
        events { __typename ... on ExecutionStepFailureEvent { error { message cause { message } } } }
      }
    }
  }
}
"""
RETRIES_QUERY = """
query Retries($root: String!) {
  runsOrError(filter: {tags: [{key: "dagster/root_run_id", value: $root}]}) {
    ... on Runs { results { runId status } }
  }
}
"""


def _hours_ahead(hours: float) -> str:
    """A start time after every earlier wave's readings, inside the plausible window (a day ahead)."""
    return (datetime.now(UTC) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _processed(running: RunningStack) -> int:
    listed = running.stack.s3_client().list_objects_v2(Bucket="mfd", Prefix="processed/")
    return len(listed.get("Contents", []))


def _incoming(running: RunningStack) -> int:
    listed = running.stack.s3_client().list_objects_v2(Bucket="mfd", Prefix="incoming/")
    return len(listed.get("Contents", []))


def test_s3_down_for_60_s_while_files_arrive(running_stack: RunningStack, pipeline: Pipeline) -> None:
    running = running_stack
    readings, predictions = (running.scalar(f"SELECT count(*) FROM {t}") for t in ("readings", "predictions"))
    files = _processed(running)
    added = generate(running, 2 * ROWS_PER_FILE, 11, "--start", _hours_ahead(4), "--interval", "1")
    running.stack_cli("hold", "s3")
    try:
        # The outage is the test's subject, so a fixed length: a run it catches exhausts raw_readings' step
        # retries (15 s, then 30 s) and is left to run_retries once S3 is back.
        time.sleep(60)
    finally:
        running.stack_cli("release", "s3")
    running.wait(running.stack.s3_ready, "S3 back", timeout=120)
    running.wait(
        lambda: (
            _incoming(running) == 0 and running.scalar("SELECT count(*) FROM readings") == readings + added
        ),
        "both files ingested after S3 returned",
        timeout=900,
    )
    assert _processed(running) == files + 2
    assert running.scalar("SELECT count(*) FROM readings") == readings + added  # none lost, none twice
    running.wait(
        lambda: running.scalar("SELECT count(*) FROM predictions") == predictions + added,
        "the new readings scored",
        timeout=600,
    )
    assert running.scalar("SELECT count(*) FROM predictions") == readings + added


def test_postgres_crash_under_running_ingestion_runs_retries_them_counts_exact(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    readings, predictions = (running.scalar(f"SELECT count(*) FROM {t}") for t in ("readings", "predictions"))
    files = _processed(running)
    added = generate(running, 2 * ROWS_PER_FILE, 13, "--start", _hours_ahead(6), "--interval", "1")
    in_flight = running.wait(
        lambda: runs(running, pipelineName="ingest_readings_job", statuses=IN_FLIGHT),
        "an ingestion run in flight",
        timeout=300,
    )
    hold(running.stack, "postgres")  # in-process, no CLI start-up: the run is still in flight
    try:
        time.sleep(PG_DOWN_S)
    finally:
        release(running.stack, "postgres")
    # A run whose launch failed while PostgreSQL was down stays STARTING until run monitoring's start timeout
    # (deploy/dagster/dagster.yaml: 90 s) fails it and run_retries starts it again: most of this wait.
    running.wait(
        lambda: (
            _incoming(running) == 0
            and running.scalar("SELECT count(*) FROM predictions") == predictions + added
        ),
        "both files ingested and scored after PostgreSQL came back",
        timeout=600,
    )
    # The webserver holds one pooled connection per storage (runs, events, schedules) without a pre-ping:
    # each fails one query after the restart, then reconnects. Until all three answer, launching fails;
    # waited for before any assertion, so that a failure here leaves no stale connection to the next test.
    running.wait(
        lambda: (
            runs(running, pipelineName="ingest_readings_job")
            and asset_events(running, "prediction_batches")
            and running.graphql()._execute(SENSORS_QUERY)["repositoriesOrError"]["nodes"]  # noqa: SLF001
        ),
        "the webserver answers from every storage again",
        timeout=120,
    )
    assert running.scalar("SELECT count(*) FROM readings") == readings + added  # none lost, none twice
    assert running.scalar("SELECT count(DISTINCT reading_id) FROM predictions") == readings + added
    assert _processed(running) == files + 2
    # The runs the crash caught failed and their run retries (dagster.yaml run_retries) succeeded. A run in
    # flight when the runs were listed may still finish before PostgreSQL goes down (on a quiet machine a
    # file's run takes about a second): it was not caught, and the counts above are what holds for it.
    ended = {run["runId"]: run for run in runs(running, pipelineName="ingest_readings_job")}
    caught = [ended[run["runId"]] for run in in_flight if ended[run["runId"]]["status"] != "SUCCESS"]
    print(f"ingestion runs in flight at the crash: {len(in_flight)}, caught by it: {len(caught)}")
    assert all(run["status"] == "FAILURE" for run in caught), caught
    for run in caught:
        retries = [r for r in ended.values() if r["tags"].get("dagster/parent_run_id") == run["runId"]]
        assert [r["status"] for r in retries] == ["SUCCESS"], (run["runId"], retries)


def test_bento_killed_detection_goes_on_in_process_and_says_so(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    total = running.scalar("SELECT count(*) FROM readings")
    last_id = running.scalar("SELECT max(id) FROM readings")
    hold(running.stack, "bento")
    try:
        running.wait(lambda: not running.stack.health()["bento"], "bentoml serve down", timeout=60)
        added = generate(running, ROWS_PER_FILE, 14, "--start", _hours_ahead(7), "--interval", "1")
        running.wait(
            lambda: running.scalar("SELECT count(*) FROM predictions") == total + added,
            "readings scored with the service down",
            timeout=600,
        )
    finally:
        release(running.stack, "bento")
    assert running.scalar("SELECT count(DISTINCT reading_id) FROM predictions") == total + added
    # the batches whose id range reaches the new readings (a range may start below them: the sensor plans
    # from its cursor, and readings an earlier test wrote straight to the store can leave it behind)
    batches = [
        e for e in asset_events(running, "prediction_batches", 10) if e["metadata"]["last_id"] > last_id
    ]
    assert batches, "no prediction_batches event reached the readings generated with the service down"
    url = running.env["MFD_SERVICE_URL"]
    assert {e["metadata"]["scored_by"] for e in batches} == {f"in-process (service at {url} down)"}
    assert {e["metadata"]["model_version"] for e in batches} == {pipeline.champion}
    assert sum(e["metadata"]["rows_scored"] for e in batches) == added


def test_mlflow_down_detection_goes_on_and_training_fails_naming_the_setting(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    total = running.scalar("SELECT count(*) FROM readings")
    running.stack_cli("hold", "mlflow")
    try:
        added = generate(running, ROWS_PER_FILE, 12, "--start", _hours_ahead(5), "--interval", "1")
        running.wait(
            lambda: running.scalar("SELECT count(*) FROM predictions") == total + added,
            "readings scored with MLflow down (the champion's local copy)",
            timeout=900,
        )
        assert "local copy (registry failed" in running.stack.log.read_text(errors="replace")
        versions = running.scalar("SELECT string_agg(DISTINCT model_version, ',') FROM predictions")
        assert versions == pipeline.champion

        gql = running.graphql()
        run_id = launch(gql, "training_job")
        assert wait_for_run(running, run_id, timeout=600) == "FAILURE"
        run = gql._execute(RUN_FAILURE_QUERY, {"runId": run_id})["runOrError"]  # noqa: SLF001
        messages = " ".join(
            str(event.get("error")) for event in run["eventConnection"]["events"] if event.get("error")
        )
        assert "MFD_MLFLOW_TRACKING_URI" in messages

        def retries_failed() -> bool:
            runs = gql._execute(RETRIES_QUERY, {"root": run_id})["runsOrError"]["results"]  # noqa: SLF001
            return len(runs) == 2 and all(r["status"] == "FAILURE" for r in runs)

        running.wait(retries_failed, "training_job's two run retries fail too", timeout=900)
    finally:
        running.stack_cli("release", "mlflow")
    running.wait(running.stack.mlflow_ready, "MLflow back", timeout=300)
