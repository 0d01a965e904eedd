"""`mfd ingest` killed with SIGKILL at each step of a load (real PostgreSQL, both object stores): a re-run
leaves every row exactly once and the file archived. The process stops at a named point of the real code
path (`MFD_PAUSE_AT`, `mfd.storage.pause`), is killed there, and the table is checked afterwards."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from shared_bucket import prefixed_objects

from mfd.generator import generate_readings, to_csv_bytes
from mfd.ingestion import load as ingest
from mfd.services import S3Server
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, Objects, S3Objects
from mfd.storage.pause import ENV

KEY = "incoming/batch.csv"
POINTS = ["before_copy", "copy", "before_commit", "before_move", "move_copied"]
CLI = "import sys; from mfd.cli.main import main; sys.exit(main(sys.argv[1:]))"


@pytest.fixture(params=["local", "s3"])
def objects(request: pytest.FixtureRequest, tmp_path: Path) -> Objects:
    return prefixed_objects(request, tmp_path)


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    return generate_readings(machines=10, rows=30_000, seed=9)  # about 2.4 MB: several 1 MiB chunks


def _environment(objects: Objects, pg_url: str, home: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    env.update(MFD_HOME=str(home), MFD_DATABASE_URL=pg_url)
    if isinstance(objects, S3Objects):
        s3: S3Server = request.getfixturevalue("s3")
        env.update(
            MFD_S3_BUCKET=objects.bucket,
            MFD_S3_ENDPOINT_URL=s3.endpoint_url,
            MFD_S3_ACCESS_KEY_ID=s3.access_key,
            MFD_S3_SECRET_ACCESS_KEY=s3.secret_key,
            MFD_S3_REGION=s3.region,
            MFD_S3_PREFIX=objects.prefix,
        )
    return env


def _kill_at(point: str, env: dict[str, str], cwd: Path) -> None:
    """Run `mfd ingest` until it reaches `point`, then SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "ingest", "--chunk-mb", "1", "--settle-seconds", "0"],
        env={**env, ENV: point},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if f"paused at {point}" in line:
                break
        else:
            pytest.fail(f"mfd ingest ended (status {proc.wait()}) without reaching {point}: {''.join(seen)}")
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("point", POINTS)
def test_killed_ingest_rerun_leaves_every_row_exactly_once(
    point: str,
    objects: Objects,
    pg_url: str,
    rows: pd.DataFrame,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    if isinstance(objects, LocalObjects):
        objects = LocalObjects(tmp_path / "objects")  # where MFD_HOME puts the local store
    data = to_csv_bytes(rows)
    objects.put(KEY, data)
    env = _environment(objects, pg_url, tmp_path, request)
    _kill_at(point, env, tmp_path)
    engine = store.create_engine(pg_url)
    store.ensure_tables(engine)
    committed = point in ("before_move", "move_copied")
    assert _count(engine) == (len(rows) if committed else 0)
    assert objects.exists(KEY)  # not deleted before it was archived
    report = ingest.ingest_object(objects, engine, KEY)
    assert report.read == len(rows) and report.loaded + report.duplicate == len(rows)
    assert (report.loaded, report.conflicting) == ((0, 0) if committed else (len(rows), 0))
    assert _count(engine) == len(rows)
    with engine.connect() as conn:
        repeated = conn.execute(
            sa.text(
                "SELECT count(*) FROM (SELECT 1 FROM readings GROUP BY timestamp, machine_id HAVING count(*) > 1) r"
            )
        ).scalar_one()
    assert repeated == 0
    assert not objects.exists(KEY) and [o.key for o in objects.list("processed/")] == [report.filed_as]
    assert objects.get(report.filed_as) == data
    engine.dispose()


def _count(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM readings")).scalar_one())
