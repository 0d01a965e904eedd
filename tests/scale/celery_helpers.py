"""The celery executor for real, shared by tests/scale and bench/scale.py: a Redis broker, two dagster-celery
workers in their own directories, and runs of main_job's steps orchestrated from a third directory. The
machines share only PostgreSQL (readings, and the Dagster instance of deploy/dagster/dagster.yaml), the
bucket, MLflow and the broker."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import yaml

from mfd.services import MlflowServer, Postgres, S3Server
from mfd.services.celery_workers import CeleryWorker, celery_workers, machine_env
from mfd.services.redis import Redis

REPO = Path(__file__).resolve().parents[2]
INSTANCE_YAML = REPO / "deploy" / "dagster" / "dagster.yaml"
CELERY_YAML = REPO / "deploy" / "celery" / "celery.yaml"
RUN_SCRIPT = REPO / "deploy" / "celery" / "run.py"
# main_job's steps that fit in a test: preparation (three steps, two side by side), the holdout and a small
# candidate logged to MLflow, with the asset checks (steps of their own). Augmentation, the quality panel,
# the sequence models and the bento build are the same kind of step, only minutes longer. champion_model
# is left out: its model card outgrew the 5,000 characters of MLflow's PostgreSQL model-version
# description with this config (update_model_version failed); cut to fit since (8729fa1), not re-run here.
STEPS = ["training_set", "cleaned_set", "machine_clusters", "holdout", "candidate_model"]
RUN_CONFIG = {
    "ops": {
        "candidate_model": {
            "config": {
                "family": "hgb",
                "folds": 2,
                "trials": 1,
                "cross_source": {"enabled": False},
                "time_budget_s": 60,
            }
        },
    }
}


def celery_config(path: Path, visibility_timeout: int) -> Path:
    """A copy of deploy/celery/celery.yaml with another visibility_timeout (a dead worker's step waits that
    long before another worker retries it); the copy configures workers and executor alike."""
    config = yaml.safe_load(CELERY_YAML.read_text())
    config["execution"]["config"]["config_source"]["broker_transport_options"]["visibility_timeout"] = (
        visibility_timeout
    )
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Cluster:
    """Where the machines meet: the environment every one of them gets, and the shared services."""

    env: dict[str, str]
    root: Path
    postgres: Postgres
    dagster_db: str

    def instance(self) -> dg.DagsterInstance:
        """The shared Dagster instance, opened from this process."""
        old = os.environ.copy()
        os.environ.update(machine_env(self.root / "observer", INSTANCE_YAML, self.env))
        try:
            return dg.DagsterInstance.get()
        finally:
            os.environ.clear()
            os.environ.update(old)

    def start_run(
        self,
        job: str,
        location: Path | None = None,
        steps: list[str] = STEPS,
        celery_yaml: Path | None = None,
    ) -> subprocess.Popen:
        """`deploy/celery/run.py` from its own directory (the orchestrating machine); `celery_yaml`: the
        executor's copy of celery.yaml (MFD_CELERY_CONFIG), the one its workers were started with."""
        config = self.root / "run_config.yaml"
        config.write_text(yaml.safe_dump(RUN_CONFIG))
        where = self.root / "orchestrator"
        where.mkdir(exist_ok=True)
        extra = ["--location", str(location)] if location else []
        env = machine_env(where, INSTANCE_YAML, self.env)
        if celery_yaml is not None:
            env["MFD_CELERY_CONFIG"] = str(celery_yaml)
        return subprocess.Popen(
            [
                sys.executable,
                str(RUN_SCRIPT),
                job,
                "--select",
                ",".join(steps),
                "--config",
                str(config),
                *extra,
            ],
            cwd=where,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )


def cluster_env(
    root: Path, postgres: Postgres, s3: S3Server, mlflow: MlflowServer, redis: Redis, name: str
) -> Cluster:
    """Fresh databases (readings, Dagster), a bucket, a model name; the environment of every machine."""
    readings_url = postgres.create_database(f"{name}readings")
    postgres.create_database(f"{name}dagster")
    env = {
        "MFD_DEPLOYMENT": "production",
        "MFD_DATABASE_URL": readings_url,
        "MFD_S3_ENDPOINT_URL": s3.endpoint_url,
        "MFD_S3_ACCESS_KEY_ID": s3.access_key,
        "MFD_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "MFD_S3_BUCKET": s3.create_bucket(f"{name}-bucket"),
        "MFD_MLFLOW_TRACKING_URI": mlflow.tracking_uri,
        "MFD_MODEL_NAME": f"{name}-model",
        "MFD_DAGSTER_PG_HOST": postgres.host,
        "MFD_DAGSTER_PG_PORT": str(postgres.port),
        "MFD_DAGSTER_PG_USER": postgres.user,
        "MFD_DAGSTER_PG_PASSWORD": "",
        "MFD_DAGSTER_PG_DB": f"{name}dagster",
        "MFD_CELERY_BROKER_URL": redis.url(0),
        "MFD_CELERY_BACKEND_URL": redis.url(1),
        # The stack's run launcher module, should a process load the instance's launcher.
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "deploy" / "dagster"), os.environ.get("PYTHONPATH")])
        ),
    }
    return Cluster(env, root, postgres, f"{name}dagster")


def generate_readings(cluster: Cluster, rows: int, machines: int = 10) -> int:
    """`mfd generate --sink db` into the cluster's readings database; the rows stored."""
    out = subprocess.run(
        [
            str(Path(sys.executable).with_name("mfd")),
            "generate",
            "--machines",
            str(machines),
            "--rows",
            str(rows),
        ]
        + ["--seed", "3", "--sink", "db", "--quiet"],
        env={**os.environ, **cluster.env, "MFD_HOME": str(cluster.root / "generator")},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    match = re.search(r"generated ([\d,]+) readings", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    return int(match.group(1).replace(",", ""))


@contextlib.contextmanager
def two_workers(cluster: Cluster, config: Path) -> Iterator[list[CeleryWorker]]:
    with celery_workers(cluster.root, ["w1", "w2"], config, INSTANCE_YAML, cluster.env) as workers:
        yield workers


def finish(proc: subprocess.Popen, timeout: float = 900) -> tuple[str, bool, str]:
    """Wait for run.py; (run id, success, its output)."""
    out, _ = proc.communicate(timeout=timeout)
    match = re.search(r"run_id=(\S+) success=(\w+)", out)
    assert match, out[-4000:]
    return match.group(1), match.group(2) == "True", out


def wait_for(check: Callable[[], Any], what: str, timeout: float) -> Any:
    """Poll `check` until truthy; fail naming what never happened."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def step_workers(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str]]:
    """(step key, Celery worker hostname) of every "Executing steps ... in celery worker" event of the run,
    in order: the worker that took each attempt of each step."""
    found = []
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event is None or "in celery worker" not in (event.message or ""):
            continue
        worker = event.engine_event_data.metadata["Celery worker"]
        found.append((event.step_key, str(getattr(worker, "value", worker))))
    return found


def step_seconds(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    """step key -> seconds from its (last) STEP_START to its STEP_SUCCESS in the run."""
    started: dict[str, float] = {}
    took: dict[str, float] = {}
    kinds = {dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    for record in instance.all_logs(run_id, of_type=kinds):
        event = record.dagster_event
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = record.timestamp
        elif event.step_key in started:
            took[event.step_key] = record.timestamp - started[event.step_key]
    return took


def materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, list[dict]]:
    """asset key -> metadata (plain values) of each of its materializations in the run."""
    found: dict[str, list[dict]] = {}
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
        mat = record.asset_materialization
        meta = {k: getattr(v, "value", v) for k, v in mat.metadata.items()}
        found.setdefault(mat.asset_key.to_user_string(), []).append(meta)
    return found
