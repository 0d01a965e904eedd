"""ReadingsStore against a real PostgreSQL and its SQLite twin, same test body."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa

from mfd.errors import ServiceUnavailable
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.storage import readings as store
from mfd_resources import ReadingsStore


@pytest.fixture
def sample() -> pd.DataFrame:
    return load_ai4i().head(500)


def test_bulk_insert_round_trip(readings_url: str, sample: pd.DataFrame) -> None:
    resource = ReadingsStore(url=readings_url)
    assert resource.insert(sample, source="ai4i") == 500
    back = resource.read()
    assert len(back) == 500 and back["id"].is_monotonic_increasing
    pd.testing.assert_series_equal(
        back["torque_nm"].reset_index(drop=True),
        sample["torque_nm"].reset_index(drop=True),
        check_names=False,
    )
    assert (back["timestamp"] == sample["timestamp"].reset_index(drop=True)).all()
    assert back["machine_failure"].sum() == sample["machine_failure"].sum()
    assert set(back["source"]) == {"ai4i"}


def test_duplicates_are_skipped_not_written_twice(readings_url: str, sample: pd.DataFrame) -> None:
    resource = ReadingsStore(url=readings_url)
    assert resource.insert(sample.head(300)) == 300
    assert resource.insert(sample) == 200
    assert resource.count() == 500


def test_incremental_read_by_id(readings_url: str, sample: pd.DataFrame) -> None:
    resource = ReadingsStore(url=readings_url)
    resource.insert(sample)
    first = resource.read(limit=100)
    rest = resource.read(after_id=int(first["id"].max()))
    assert len(first) == 100 and len(rest) == 400
    assert store.max_reading_id(resource.engine) == int(rest["id"].max())


def test_unreachable_database_names_the_setting() -> None:
    engine = sa.create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    with pytest.raises(ServiceUnavailable, match="MFD_DATABASE_URL"):
        store.ensure_tables(engine)
