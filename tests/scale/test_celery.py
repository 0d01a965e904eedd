"""main_job's steps on the dagster-celery executor for real: Debian's redis-server as the broker, two workers
in their own directories, the run orchestrated from a third; they share only PostgreSQL, the bucket, MLflow
and the broker (tests/scale/celery_helpers.py). Which worker ran each step is read from the event log."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from celery_helpers import (
    STEPS,
    Cluster,
    celery_config,
    cluster_env,
    finish,
    generate_readings,
    materializations,
    step_seconds,
    step_workers,
    two_workers,
    wait_for,
)
from conftest import unique

from mfd.services import MlflowServer, Postgres, S3Server
from mfd.services.redis import Redis, redis_server

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1800)]

ROWS = 20_000
# Redis hands an unacknowledged task to another worker visibility_timeout seconds after a worker took it
# (deploy/celery/celery.yaml: two hours in production). It must exceed every step on a live worker, or a step
# still running is handed out twice (an idle worker restores a busy one's task), and it is how long the
# killed worker's step waits before the other worker takes it. Longer than any step of STEPS on a loaded
# 2-core host (candidate_model took 132 s with the load average at 40): the first test's, and the kill
# test's when no run of the module has measured the steps yet.
VISIBILITY_TIMEOUT_S = 300
# The kill test's: SAFETY times the longest step of the module's last successful run, measured on this host
# under its load of the minute, at least MIN_VISIBILITY_TIMEOUT_S (quiet: ~10 s steps, so the minimum) and
# at most VISIBILITY_TIMEOUT_S. A fixed 300 s made the test wait ~5 minutes for the redelivery.
SAFETY = 4
MIN_VISIBILITY_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def redis() -> Iterator[Redis]:
    with redis_server() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
    postgres: Postgres,
    s3: S3Server,
    mlflow: MlflowServer,
    redis: Redis,
) -> Cluster:
    cluster = cluster_env(tmp_path_factory.mktemp("celery"), postgres, s3, mlflow, redis, unique("celery"))
    assert generate_readings(cluster, ROWS) == ROWS
    return cluster


@pytest.fixture(scope="module")
def config(cluster: Cluster) -> Path:
    return celery_config(cluster.root / "celery.yaml", VISIBILITY_TIMEOUT_S)


def finished_mlflow_runs(mlflow: MlflowServer) -> int:
    """Finished runs of the `mfd` experiment (one per candidate_model that completed)."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow.tracking_uri)
    experiment = client.get_experiment_by_name("mfd")
    if experiment is None:
        return 0
    runs = client.search_runs([experiment.experiment_id], "attributes.status = 'FINISHED'", max_results=1000)
    return len(runs)


def redelivery_timeout(instance: dg.DagsterInstance) -> int:
    """The kill test's visibility_timeout: from the steps of the last successful run (see SAFETY)."""
    done = instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS]), limit=1)
    took = step_seconds(instance, done[0].run_id) if done else {}
    if not took:
        return VISIBILITY_TIMEOUT_S
    longest = max(took.values())
    print(f"longest step of run {done[0].run_id}: {longest:.1f} s ({max(took, key=took.get)})")
    return min(VISIBILITY_TIMEOUT_S, max(MIN_VISIBILITY_TIMEOUT_S, math.ceil(SAFETY * longest)))


def assert_exact_counts(instance: dg.DagsterInstance, run_id: str) -> None:
    """Each step materialized its asset once, and the rows add up from the stored readings on."""
    found = materializations(instance, run_id)
    assert {key: len(found.get(key, [])) for key in STEPS} == dict.fromkeys(STEPS, 1)
    training, cleaned, holdout = found["training_set"][0], found["cleaned_set"][0], found["holdout"][0]
    assert training["rows"] == ROWS
    assert cleaned["rows_before"] == ROWS
    assert cleaned["rows_after"] == ROWS - cleaned["rows_removed"]
    assert holdout["training_set_rows"] == ROWS
    assert holdout["dagster/row_count"] == round(ROWS * 0.2)


def test_celery_steps_of_one_run_land_on_both_workers(
    cluster: Cluster, config: Path, mlflow: MlflowServer
) -> None:
    with two_workers(cluster, config):
        versions = finished_mlflow_runs(mlflow)
        run_id, success, out = finish(cluster.start_run("main_job", celery_yaml=config))
    assert success, out[-4000:]
    instance = cluster.instance()
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
    ran = step_workers(instance, run_id)
    taken = Counter(step for step, _ in ran)
    assert set(STEPS) <= set(taken) and set(taken.values()) == {1}, ran  # every step taken once
    assert {worker.split("@")[0] for _, worker in ran} == {"w1", "w2"}, ran
    assert_exact_counts(instance, run_id)
    assert finished_mlflow_runs(mlflow) == versions + 1  # one candidate logged, the killed one never finished


def test_celery_worker_killed_mid_step_is_retried_on_the_other(
    cluster: Cluster, mlflow: MlflowServer
) -> None:
    instance = cluster.instance()
    timeout = redelivery_timeout(instance)
    print(f"visibility_timeout {timeout} s")
    config = celery_config(cluster.root / "celery-kill.yaml", timeout)
    with two_workers(cluster, config) as workers:
        versions = finished_mlflow_runs(mlflow)
        before = {r.run_id for r in instance.get_runs()}
        proc = cluster.start_run("main_job", celery_yaml=config)
        run_id = wait_for(
            lambda: next((r.run_id for r in instance.get_runs() if r.run_id not in before), None),
            "the run",
            300,
        )
        # candidate_model is the longest step: kill whichever worker took it while it trains.
        holder = wait_for(
            lambda: next((w for s, w in step_workers(instance, run_id) if s == "candidate_model"), None),
            "a worker taking candidate_model",
            600,
        )
        victim = next(w for w in workers if holder.startswith(f"{w.name}@"))
        victim.kill()
        successes = {e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)}
        assert "candidate_model" not in successes, "candidate_model finished before the kill: not mid-step"
        run_id_out, success, out = finish(proc, timeout=1200)
    # with the figures that say whether a live step outlasted the visibility timeout (a third attempt, or a
    # second taker of another step)
    why = (step_seconds(instance, run_id), timeout)
    print(f"step seconds, visibility_timeout: {why}")
    assert run_id_out == run_id
    assert success, out[-4000:]
    ran = step_workers(instance, run_id)
    attempts = [w.split("@")[0] for s, w in ran if s == "candidate_model"]
    survivor = next(w.name for w in workers if w is not victim)
    assert attempts == [victim.name, survivor], (ran, why)  # taken by the victim, retried on the other
    taken = Counter(s for s, _ in ran)
    once_but_the_retried = taken - Counter(taken.keys()) == Counter({"candidate_model": 1})
    assert set(STEPS) <= set(taken) and once_but_the_retried, (ran, why)
    successes = Counter(
        e.step_key for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
    )
    assert successes == Counter(taken.keys())  # every step, the retried one too, succeeded once
    assert_exact_counts(instance, run_id)
    assert finished_mlflow_runs(mlflow) == versions + 1  # one candidate logged, the killed one never finished
