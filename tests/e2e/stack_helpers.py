"""The production stack for the end-to-end tests: `python -m mfd.services.stack up` (what `make stack` runs)
in a temporary MFD_STACK_HOME on free ports, stopped with `down` afterwards (`started_stack`); and the
daemon-driven path from generated CSV files to a served champion, run once on it (`run_pipeline`). The
session fixtures `running_stack` and `pipeline` in tests/conftest.py call these."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from mfd.services import free_port
from mfd.services.stack import Ports, Stack

REPO = Path(__file__).resolve().parents[2]
MODEL = "mfd-e2e-classifier"
ROWS_PER_FILE = 1500
FIRST_FILES = 2  # 3,000 readings: enough failures for the training set's expectations


@dataclass
class RunningStack:
    stack: Stack
    env: dict[str, str]
    up_output: str
    workdir: Path

    def mfd(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """`mfd ...` with the stack's environment, as an operator's shell after `make stack` would run it."""
        return subprocess.run(
            [str(Path(sys.executable).with_name("mfd")), *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def stack_cli(self, *args: str) -> str:
        proc = subprocess.run(
            [sys.executable, "-m", "mfd.services.stack", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def engine(self) -> sa.Engine:
        return sa.create_engine(self.stack.pg_url("mfd"))

    def scalar(self, sql: str) -> Any:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                return conn.execute(sa.text(sql)).scalar()
        finally:
            engine.dispose()

    def graphql(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient("127.0.0.1", port_number=self.stack.ports.dagster, timeout=60)

    def log_tail(self, chars: int = 6000) -> str:
        return self.stack.log.read_text(errors="replace")[-chars:] if self.stack.log.exists() else ""

    def wait(self, check: Callable[[], Any], what: str, timeout: float) -> Any:
        """Poll `check` until it returns something truthy; fail with the stack's log tail."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = check()
                if last:
                    return last
            except Exception as exc:  # noqa: BLE001 - not there yet
                last = exc
            time.sleep(1)
        raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last!r})\n{self.log_tail()}")


def _free_ports() -> Ports:
    taken: set[int] = set()

    def port() -> int:
        while (candidate := free_port()) in taken:
            pass
        taken.add(candidate)
        return candidate

    return Ports(**{name: port() for name in Ports.__dataclass_fields__})


@contextmanager
def started_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    # Not under pytest's basetemp (mode 0700): PostgreSQL runs as the `postgres` user and walks into it.
    root = Path(tempfile.mkdtemp(prefix="mfd-e2e-stack-"))
    os.chmod(root, 0o755)
    stack = Stack(root, _free_ports(), MODEL)
    env = {key: value for key, value in os.environ.items() if key != "MFD_API_KEYS"}
    env.update(stack.env())  # MFD_API_KEYS: the stack's own key
    # No retraining on new labels mid-test: the counts and the champion's version stay the test's own.
    env["MFD_RETRAIN_NEW_LABELS"] = "1000000000"
    workdir = tmp_path_factory.mktemp("operator")
    running = RunningStack(stack, env, "", workdir)
    try:
        running.up_output = running.stack_cli("up")
        yield running
    finally:
        subprocess.run([sys.executable, "-m", "mfd.services.stack", "down"], env=env, cwd=REPO, timeout=120)
        if stack.log.exists():  # kept with the test's output, to read after a failure
            shutil.copy(stack.log, tmp_path_factory.getbasetemp() / "stack.log")
        shutil.rmtree(root, ignore_errors=True)


@dataclass
class Pipeline:
    """What the daemon-driven path did on the stack, for the tests to check."""

    generated: int
    files: list[str]
    materialize_run: str
    training_run: str
    champion: str
    figures: dict[str, float] = field(default_factory=dict)


def generate(running: RunningStack, rows: int, seed: int, *extra: str) -> int:
    """`mfd generate` CSV files into the stack's bucket; the readings it reports it wrote."""
    out = running.mfd(
        "generate",
        "--machines",
        "10",
        "--rows",
        str(rows),
        "--seed",
        str(seed),
        "--sink",
        "files",
        "--file-rows",
        str(ROWS_PER_FILE),
        "--quiet",
        *extra,
    )
    match = re.search(r"generated ([\d,]+) readings", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    return int(match.group(1).replace(",", ""))


def launch(client: DagsterGraphQLClient, job: str, **kwargs: Any) -> str:
    """Launch `job` (or `__ASSET_JOB` with an asset_selection) in the mfd code location; the run id."""
    return client.submit_job_execution(
        job, repository_location_name="mfd", repository_name="__repository__", **kwargs
    )


def wait_for_run(running: RunningStack, run_id: str, timeout: float = 600) -> str:
    from dagster import DagsterRunStatus

    done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    status = running.wait(
        lambda: (s := running.graphql().get_run_status(run_id)) in done and s, f"run {run_id}", timeout
    )
    return status.value


def run_pipeline(running_stack: RunningStack) -> Pipeline:
    """CSV files into S3 -> incoming_files_sensor ingests them -> a selection and training_job launched
    over GraphQL -> a champion -> prediction_sensor scores every reading; bento serves the champion."""
    running = running_stack
    started = time.monotonic()
    figures: dict[str, float] = {}

    def phase(name: str) -> None:
        figures[name] = round(time.monotonic() - started - sum(figures.values()), 1)

    generated = generate(running, ROWS_PER_FILE * FIRST_FILES, seed=7)
    client = running.stack.s3_client()
    files = [o["Key"] for o in client.list_objects_v2(Bucket="mfd", Prefix="incoming/").get("Contents", [])]
    running.wait(
        lambda: (
            running.scalar("SELECT count(*) FROM readings") == generated
            and not client.list_objects_v2(Bucket="mfd", Prefix="incoming/").get("Contents")
        ),
        "incoming_files_sensor ingests every file",
        timeout=600,
    )
    phase("generate + ingest (s)")
    gql = running.graphql()
    materialize_run = launch(
        gql, "__ASSET_JOB", asset_selection=[["training_set"], ["cleaned_set"], ["holdout"]]
    )
    assert wait_for_run(running, materialize_run) == "SUCCESS", running.log_tail()
    phase("training_set, cleaned_set, holdout (s)")
    training_run = launch(
        gql,
        "training_job",
        run_config={"ops": {"candidate_model": {"config": {"family": "hgb", "folds": 2, "trials": 1}}}},
    )
    assert wait_for_run(running, training_run, timeout=900) == "SUCCESS", running.log_tail()
    champion = running.wait(running.stack.champion_version, "a champion in the registry", timeout=60)
    phase("training_job (s)")
    running.wait(
        lambda: running.scalar("SELECT count(*) FROM predictions") == generated,
        "prediction_sensor scores every reading",
        timeout=600,
    )
    phase("every reading scored (s)")
    print(f"\ne2e pipeline on the stack: {figures}")
    return Pipeline(generated, files, materialize_run, training_run, champion, figures)


RUNS_QUERY = """
query Runs($filter: RunsFilter!) {
  runsOrError(filter: $filter) {
    ... on Runs {
      results { runId jobName status creationTime startTime endTime tags { key value } }
    }
  }
}
"""


def runs(running: RunningStack, **run_filter: Any) -> list[dict]:
    """The runs matching a GraphQL RunsFilter (e.g. pipelineName=..., statuses=[...]), newest first; each
    with its tags as a dict."""
    try:
        data = running.graphql()._execute(RUNS_QUERY, {"filter": run_filter})  # noqa: SLF001
    except DagsterGraphQLClientError:
        # After a PostgreSQL restart the webserver's pooled connection (no pre-ping) fails one query, then
        # reconnects: docs/operating.md.
        data = running.graphql()._execute(RUNS_QUERY, {"filter": run_filter})  # noqa: SLF001
    found = data["runsOrError"]["results"]
    return [{**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} for run in found]


def asset_events(running: RunningStack, asset: str, limit: int = 1) -> list[dict]:
    """The asset's latest materializations through deploy/graphql/runs.py's `events` (the documented
    example): run id, time, partition and metadata {label: value}."""
    spec = importlib.util.spec_from_file_location("graphql_runs", REPO / "deploy" / "graphql" / "runs.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    return example.events(running.graphql(), asset, limit)
