"""Runs over Dagster's GraphQL API on the stack, through deploy/graphql/runs.py (the documented example):
the selection and training_job the pipeline launched, their status, and the asset events they wrote."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from stack_helpers import Pipeline, RunningStack

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "graphql" / "runs.py"


def _runs(running: RunningStack, *args: str) -> object:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--url", f"http://127.0.0.1:{running.stack.ports.dagster}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_run_status_and_asset_events_over_graphql(running_stack: RunningStack, pipeline: Pipeline) -> None:
    running = running_stack
    for run_id in (pipeline.materialize_run, pipeline.training_run):
        assert _runs(running, "status", run_id) == {"run_id": run_id, "status": "SUCCESS"}
    [holdout] = _runs(running, "events", "holdout")
    assert holdout["runId"] == pipeline.materialize_run
    assert holdout["metadata"]["stored_at"].startswith("dagster/holdout.parquet in s3://mfd/")
    [candidate] = _runs(running, "events", "candidate_model")
    assert candidate["runId"] == pipeline.training_run
    # The MLflow link in the metadata points at the server that serves it.
    link = candidate["metadata"]["mlflow_run"]
    assert link.startswith(f"http://127.0.0.1:{running.stack.ports.mlflow}/")
    with urllib.request.urlopen(link, timeout=30) as response:
        assert response.status == 200
    [champion] = _runs(running, "events", "champion_model")
    assert champion["runId"] == pipeline.training_run
    assert champion["metadata"]["champion_version"] == pipeline.champion


def test_a_selection_materialized_over_graphql(running_stack: RunningStack, pipeline: Pipeline) -> None:
    """A second materialization of one asset, launched and waited for through the example."""
    running = running_stack
    launched = _runs(
        running, "materialize", "holdout", "--config", '{"ops": {"holdout": {"config": {"seed": 1}}}}'
    )
    run_id = launched["run_id"]
    assert _runs(running, "status", run_id, "--wait", "300")["status"] == "SUCCESS"
    latest, previous = _runs(running, "events", "holdout", "--limit", "2")
    assert (latest["runId"], previous["runId"]) == (run_id, pipeline.materialize_run)
    assert latest["metadata"]["seed"] == 1 and previous["metadata"]["seed"] == 0
