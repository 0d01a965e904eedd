"""Run and event-log retention (deploy/dagster/prune_runs.py) on a COPY of a PostgreSQL Dagster instance:
the copy loses exactly the finished runs past their retention, with their event logs; the original keeps all;
unfinished runs are never touched. And the daemon's tick retention is configured in both instance files."""

from __future__ import annotations

import contextlib
import os
import runpy
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from conftest import unique

from mfd.services import Postgres

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PRUNE = runpy.run_path(str(REPO / "deploy" / "dagster" / "prune_runs.py"))


@dg.op(config_schema={"fail": bool})
def maybe_fail(context) -> int:  # noqa: ANN001 - dagster wants it bare or dagster-typed
    context.log.info("a step's log line: an event to delete with its run")
    if context.op_config["fail"]:
        raise RuntimeError("fails on purpose")
    return 1


@dg.job
def tiny_job() -> None:
    maybe_fail()


@contextlib.contextmanager
def instance_on(tmp_path: Path, postgres: Postgres, dbname: str) -> Iterator[dg.DagsterInstance]:
    """The production instance config (deploy/dagster/dagster.yaml) pointed at database `dbname`."""
    home = tmp_path / dbname
    home.mkdir(exist_ok=True)
    shutil.copy(REPO / "deploy" / "dagster" / "dagster.yaml", home / "dagster.yaml")
    env = {
        "DAGSTER_HOME": str(home),
        "MFD_DAGSTER_PG_HOST": postgres.host,
        "MFD_DAGSTER_PG_PORT": str(postgres.port),
        "MFD_DAGSTER_PG_USER": postgres.user,
        "MFD_DAGSTER_PG_PASSWORD": "",
        "MFD_DAGSTER_PG_DB": dbname,
    }
    old = os.environ.copy()
    os.environ.update(env)
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        os.environ.clear()
        os.environ.update(old)


def run_ids(instance: dg.DagsterInstance) -> set[str]:
    return {r.run_id for r in instance.get_runs()}


def test_prune_runs_on_a_copy_of_an_instance(tmp_path: Path, postgres: Postgres) -> None:
    original = unique("dagsterorig")
    postgres.create_database(original)
    with instance_on(tmp_path, postgres, original) as instance:
        ok = [
            tiny_job.execute_in_process(instance=instance, run_config=_fail(False)).run_id for _ in range(2)
        ]
        failed = tiny_job.execute_in_process(
            instance=instance, run_config=_fail(True), raise_on_error=False
        ).run_id
        # A run still in progress (a worker on it now): created long ago as far as the pruner knows.
        started = instance.create_run_for_job(
            tiny_job, run_config=_fail(False), status=dg.DagsterRunStatus.STARTED
        )
    copy = unique("dagstercopy")
    with psycopg.connect(
        host=postgres.host, port=postgres.port, user=postgres.user, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{original}"')

    with instance_on(tmp_path, postgres, copy) as instance:
        assert run_ids(instance) == {*ok, failed, started.run_id}
        later = datetime.now(UTC) + timedelta(days=100)
        dry = PRUNE["prune_runs"](instance, days=90, failed_days=365, now=later, dry_run=True)
        assert (sorted(dry.deleted), dry.kept) == (sorted(ok), 1)
        assert run_ids(instance) == {*ok, failed, started.run_id}  # a dry run deletes nothing

        pruned = PRUNE["prune_runs"](instance, days=90, failed_days=365, now=later)
        assert (sorted(pruned.deleted), pruned.deleted_failed, pruned.kept) == (sorted(ok), 0, 1)
        assert run_ids(instance) == {failed, started.run_id}
        assert all(not instance.all_logs(run_id) for run_id in ok)  # the event logs went with the runs
        assert any(e.dagster_event and e.dagster_event.is_failure for e in instance.all_logs(failed))

        pruned = PRUNE["prune_runs"](instance, days=90, failed_days=365, now=later + timedelta(days=300))
        assert (pruned.deleted, pruned.deleted_failed, pruned.kept) == ([failed], 1, 0)
        assert run_ids(instance) == {started.run_id}  # in progress: never pruned
    with instance_on(tmp_path, postgres, original) as instance:
        assert run_ids(instance) == {*ok, failed, started.run_id}  # the original is untouched


def _fail(fail: bool) -> dict:
    return {"ops": {"maybe_fail": {"config": {"fail": fail}}}}


@pytest.mark.parametrize("path", ["dagster.yaml", "deploy/dagster/dagster.yaml"])
def test_tick_retention_is_configured_and_valid(path: str) -> None:
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema

    config = yaml.safe_load((REPO / path).read_text())
    retention = config["retention"]
    assert retention["sensor"]["purge_after_days"] == {
        "skipped": 1,
        "failure": 30,
        "success": 30,
        "started": 30,
    }
    assert retention["schedule"]["purge_after_days"] == 90
    result = validate_config(dagster_instance_config_schema(), {"retention": retention})
    assert result.success, result.errors
