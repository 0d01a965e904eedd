"""The monthly-partitioned readings store on a real PostgreSQL and S3 bucket: readings copied in by month,
an old month archived to Parquet in the bucket and detached, the time-bounded query reading only its
months, and the month restored with every row as it was; through the `mfd partitions` command too."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mfd.errors import MfdError
from mfd.generator.fleet import generate_readings
from mfd.services import S3Server
from mfd.storage.archive import archive_keys, archive_month, archived_months, restore_month
from mfd.storage.objects import S3Objects
from mfd.storage.partitions import attached_months, copy_from_readings, create_partitioned
from mfd.storage.readings import create_engine, ensure_tables, insert_readings

pytestmark = pytest.mark.integration

START = datetime(2026, 1, 30, tzinfo=UTC)  # three months: Jan (2 days), Feb, Mar (a few days)


@pytest.fixture
def engine(pg_url: str) -> sa.Engine:
    engine = create_engine(pg_url)
    ensure_tables(engine)
    return engine


def _store_readings(engine: sa.Engine) -> pd.DataFrame:
    """Readings every 10 minutes over ~40 days for 3 machines; the stored frame."""
    fleet = generate_readings(machines=3, rows=3 * 6 * 24 * 40, seed=5, start=START, interval_s=600)
    insert_readings(engine, fleet)
    with engine.connect() as conn:
        return pd.read_sql(sa.text("SELECT * FROM readings ORDER BY id"), conn)


def _month_counts(stored: pd.DataFrame) -> dict[str, int]:
    return stored["timestamp"].dt.tz_convert(UTC).dt.strftime("%Y-%m").value_counts().sort_index().to_dict()


def test_archive_detach_and_restore_a_month(engine: sa.Engine, s3: S3Server, bucket: str) -> None:
    stored = _store_readings(engine)
    objects = S3Objects(s3.client(), bucket)
    create_partitioned(engine)
    assert copy_from_readings(engine) == len(stored)
    assert copy_from_readings(engine) == 0  # a repeat copies nothing twice
    counts = _month_counts(stored)
    assert attached_months(engine) == counts and list(counts) == ["2026-01", "2026-02", "2026-03"]

    done = archive_month(engine, objects, "2026-01")
    assert (done.rows, done.min_id) == (counts["2026-01"], int(stored["id"].min()))
    assert list(attached_months(engine)) == ["2026-02", "2026-03"]
    assert archived_months(objects) == ["2026-01"]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('readings_by_month_2026_01')")).scalar() is None
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                sa.text("EXPLAIN SELECT * FROM readings_by_month WHERE \"timestamp\" >= '2026-03-01'")
            )
        )
    assert "readings_by_month_2026_03" in plan and "2026_02" not in plan  # only the month it needs

    with pytest.raises(MfdError, match="no archive of 2026-02"):
        restore_month(engine, objects, "2026-02")
    assert restore_month(engine, objects, "2026-01") == counts["2026-01"]
    assert attached_months(engine) == counts
    with pytest.raises(MfdError, match="is attached"):  # never loaded twice
        restore_month(engine, objects, "2026-01")
    with engine.connect() as conn:
        back = pd.read_sql(sa.text("SELECT * FROM readings_by_month ORDER BY id"), conn)
    pd.testing.assert_frame_equal(back, stored, check_dtype=False)  # every row and value as it was


def test_a_tampered_archive_is_not_restored(engine: sa.Engine, s3: S3Server, bucket: str) -> None:
    _store_readings(engine)
    objects = S3Objects(s3.client(), bucket)
    create_partitioned(engine)
    copy_from_readings(engine)
    archive_month(engine, objects, "2026-03")
    key, _ = archive_keys("readings_by_month", "2026-03")
    objects.put(key, objects.get(key)[:-10] + bytes(10))
    with pytest.raises(MfdError, match="SHA-256"):
        restore_month(engine, objects, "2026-03")
    assert "2026-03" not in attached_months(engine)


def test_the_command_archives_all_but_the_last_months(
    pg_url: str, s3: S3Server, bucket: str, tmp_path: Path
) -> None:
    engine = create_engine(pg_url)
    ensure_tables(engine)
    stored = _store_readings(engine)
    env = {
        **os.environ,
        "MFD_DATABASE_URL": pg_url,
        "MFD_S3_ENDPOINT_URL": s3.endpoint_url,
        "MFD_S3_ACCESS_KEY_ID": s3.access_key,
        "MFD_S3_SECRET_ACCESS_KEY": s3.secret_key,
        "MFD_S3_BUCKET": bucket,
        "MFD_HOME": str(tmp_path),
    }
    mfd = [str(Path(sys.executable).with_name("mfd")), "partitions"]

    def run(*args: str) -> str:
        out = subprocess.run([*mfd, *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        return out.stdout

    assert f"copied {len(stored):,} readings" in run("sync")
    months_back = (datetime.now(UTC).year - 2026) * 12 + datetime.now(UTC).month - 2  # keeps March only
    out = run("archive", "--keep-months", str(months_back))
    assert out.count("archived ") == 2 and "2026-01" in out and "2026-02" in out, out
    listing = run("list")
    assert (
        "2026-03  attached" in listing and "2026-01  archived" in listing and "2026-02  archived" in listing
    )
    assert "restored 2026-02" in run("restore", "--month", "2026-02")
    assert np.isclose(len(stored), sum(attached_months(engine).values()) + _month_counts(stored)["2026-01"])
