"""Faults on the running stack (after the happy path): the S3 server down for 60 s while files arrive, and
MLflow down. Services are stopped the way they fail (SIGKILL) and held down by their supervisor
(`python -m mfd.services.stack hold|release <service>`); counts stay exact."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from stack_helpers import ROWS_PER_FILE, Pipeline, RunningStack, generate, launch, wait_for_run

pytestmark = pytest.mark.integration

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
