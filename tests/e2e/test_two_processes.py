"""Asset outputs through the object store: a job's two steps run in two processes that share nothing but
PostgreSQL (the Dagster instance) and S3. The first process fails step 2 on purpose; a second process, in
another directory with another DAGSTER_HOME, re-executes it from failure and reads step 1's output from S3.
Dagster's filesystem IO manager, run the same way, cannot: the control case."""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from conftest import unique

from mfd.services import Postgres, S3Server

pytestmark = pytest.mark.integration

LOCATION = Path(__file__).with_name("two_steps.py")
INSTANCE_YAML = Path(__file__).parents[2] / "deploy" / "dagster" / "dagster.yaml"


def _machine(root: Path, name: str, postgres: Postgres, dbname: str, env: dict[str, str]) -> dict:
    """A directory standing for one machine: its own DAGSTER_HOME and working directory."""
    home = root / name
    home.mkdir()
    shutil.copy(INSTANCE_YAML, home / "dagster.yaml")
    return {
        **os.environ,
        **env,
        "DAGSTER_HOME": str(home),
        "MFD_DAGSTER_PG_HOST": postgres.host,
        "MFD_DAGSTER_PG_PORT": str(postgres.port),
        "MFD_DAGSTER_PG_USER": postgres.user,
        "MFD_DAGSTER_PG_PASSWORD": "",
        "MFD_DAGSTER_PG_DB": dbname,
        "MFD_HOME": str(home / ".mfd"),
    }


def _run(env: dict, cwd: Path, *args: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, str(LOCATION), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    match = re.search(r"run_id=(\S+) success=(\w+)", proc.stdout)
    assert match, proc.stdout + proc.stderr[-3000:]
    return proc.returncode, match.group(1), proc.stdout + proc.stderr


def _two_machines(tmp_path: Path, postgres: Postgres, env: dict[str, str]) -> tuple[dict, dict]:
    dbname = unique("dagster")
    postgres.create_database(dbname)
    first = _machine(tmp_path, "first", postgres, dbname, {**env, "MFD_TEST_FAIL_SECOND": "1"})
    second = _machine(tmp_path, "second", postgres, dbname, env)
    return first, second


def _s3_env(s3: S3Server, bucket: str) -> dict[str, str]:
    return {
        "MFD_S3_ENDPOINT_URL": s3.endpoint_url,
        "MFD_S3_ACCESS_KEY_ID": s3.access_key,
        "MFD_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "MFD_S3_BUCKET": bucket,
    }


def _instance(env: dict) -> dg.DagsterInstance:
    old = os.environ.copy()
    os.environ.update(env)
    try:
        return dg.DagsterInstance.get()
    finally:
        os.environ.clear()
        os.environ.update(old)


def test_second_step_in_another_process_reads_the_first_from_s3(
    tmp_path: Path, postgres: Postgres, s3: S3Server, bucket: str
) -> None:
    first, second = _two_machines(tmp_path, postgres, _s3_env(s3, bucket))
    code, failed_run, out = _run(first, Path(first["DAGSTER_HOME"]), "first")
    assert code == 1, out
    shutil.rmtree(first["DAGSTER_HOME"])  # the first machine is gone: nothing of it survives but the services

    code, retry_run, out = _run(second, Path(second["DAGSTER_HOME"]), "retry", failed_run)
    assert code == 0, out

    keys = sorted(o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [
        "two-steps/dagster/frame_summary.pkl",
        "two-steps/dagster/sensor_frame.parquet",
        "two-steps/dagster/summary_copy.pkl",
    ]
    instance = _instance(second)
    steps = {
        event.step_key for event in instance.all_logs(retry_run, of_type=dg.DagsterEventType.STEP_SUCCESS)
    }
    assert steps == {"frame_summary", "summary_copy"}  # sensor_frame was not run again: read from S3
    summary = pickle.loads(
        s3.client().get_object(Bucket=bucket, Key="two-steps/dagster/summary_copy.pkl")["Body"].read()
    )
    assert summary["rows"] == 4
    assert summary["index"] == [10, 11, 12, 13]
    assert summary["dtypes"] == {
        "machine_type": "category",
        "timestamp": "datetime64[ns, UTC]",
        "torque_nm": "float64",
    }
    stored = s3.client().get_object(Bucket=bucket, Key="two-steps/dagster/sensor_frame.parquet")
    frame = pd.read_parquet(io.BytesIO(stored["Body"].read()))
    assert list(frame["torque_nm"]) == [40.5, 41.0, 39.5, 60.25]


def test_the_filesystem_io_manager_cannot_do_that(tmp_path: Path, postgres: Postgres) -> None:
    first, second = _two_machines(tmp_path, postgres, {"MFD_TEST_IO": "filesystem"})
    code, failed_run, out = _run(first, Path(first["DAGSTER_HOME"]), "first")
    assert code == 1, out
    shutil.rmtree(first["DAGSTER_HOME"])
    code, _, out = _run(second, Path(second["DAGSTER_HOME"]), "retry", failed_run)
    assert code == 1
    assert "sensor_frame" in out and "No such file" in out
