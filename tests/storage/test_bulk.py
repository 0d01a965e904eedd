"""The one bulk writer against a real PostgreSQL and its SQLite twin, same test body."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import psycopg
import pytest
import sqlalchemy as sa

from mfd.storage import readings as store
from mfd.storage.bulk import BulkWriter
from mfd.storage.tables import predictions

COLUMNS = ("reading_id", "probability", "label")
UPDATE = ("model_name", "model_version", "probability", "label", "scored_at")


def _scored(ids: range, probability: float) -> pd.DataFrame:
    return pd.DataFrame(
        {"reading_id": list(ids), "probability": probability, "label": int(probability >= 0.5)}
    )


def _writer(conn: sa.Connection, version: str, update: tuple[str, ...] = UPDATE) -> BulkWriter:
    constants = {"model_name": 'm, "quoted"', "model_version": version, "scored_at": datetime.now(UTC)}
    return BulkWriter(
        conn, predictions, COLUMNS, conflict=("reading_id",), update=update, constants=constants
    )


def _stored(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(predictions).order_by(predictions.c.reading_id), conn)


@pytest.fixture
def engine(readings_url: str) -> sa.Engine:
    engine = store.create_engine(readings_url)
    store.ensure_tables(engine)
    return engine


def test_upsert_inserts_then_updates_the_update_columns(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        assert _writer(conn, "1").write_frame(_scored(range(1, 6), 0.2)) == 5
    with engine.begin() as conn:
        writer = _writer(conn, "2")
        # Rows 4 and 5 are stored: the direct COPY fails, the merge updates them and inserts 6-8.
        assert writer.write_frame(_scored(range(4, 9), 0.9)) == 5
        assert not writer.direct
        assert writer.write_frame(_scored(range(9, 11), 0.9)) == 2  # later writes go through the merge
    stored = _stored(engine)
    assert stored["reading_id"].tolist() == list(range(1, 11))
    assert stored["model_version"].tolist() == ["1"] * 3 + ["2"] * 7
    assert stored["probability"].tolist() == [0.2] * 3 + [0.9] * 7
    assert stored["label"].tolist() == [0] * 3 + [1] * 7
    assert set(stored["model_name"]) == {'m, "quoted"'}


def test_without_update_columns_a_stored_key_is_skipped(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        _writer(conn, "1").write_frame(_scored(range(1, 4), 0.2))
    with engine.begin() as conn:
        assert _writer(conn, "2", update=()).write_frame(_scored(range(2, 6), 0.9)) == 2
    stored = _stored(engine)
    assert stored["model_version"].tolist() == ["1", "1", "1", "2", "2"]
    assert stored["probability"].tolist() == [0.2, 0.2, 0.2, 0.9, 0.9]


def test_postgres_bad_value_rolls_back_only_that_write(engine: sa.Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("COPY and savepoints are the PostgreSQL path")
    with engine.begin() as conn:
        writer = _writer(conn, "1")
        with pytest.raises(psycopg.errors.DataError):
            writer.write_csv(b"1,0.5,0\n2,not-a-number,0\n")
        assert writer.write_csv(b"3,0.7,1\n") == 1  # the transaction is still usable
    assert _stored(engine)["reading_id"].tolist() == [3]


def test_numbers_round_trip_bit_for_bit_and_an_out_of_range_label_is_refused(engine: sa.Engine) -> None:
    # PostgreSQL sends a frame of numbers as COPY BINARY: floats keep every bit, constants every character,
    # and a value the column cannot hold is refused by the server, never wrapped around on the way.
    probability = [0.1 + 0.2, 1 / 3, 5e-324, 0.9999999999999999]
    scored = pd.DataFrame({"reading_id": [1, 2, 3, 4], "probability": probability, "label": [0, 0, 0, 1]})
    with engine.begin() as conn:
        assert _writer(conn, "7").write_frame(scored) == 4
    stored = _stored(engine)
    assert stored["probability"].tolist() == probability
    assert stored["model_name"].tolist() == ['m, "quoted"'] * 4 and set(stored["model_version"]) == {"7"}
    scored_at = pd.to_datetime(stored["scored_at"], utc=True)
    assert (scored_at - pd.Timestamp.now(tz="UTC")).abs().max() < pd.Timedelta(minutes=5)
    if engine.dialect.name != "postgresql":
        return  # SQLite stores any integer in any integer column
    too_big = pd.DataFrame({"reading_id": [5], "probability": [0.5], "label": [70_000]})
    with pytest.raises((sa.exc.DBAPIError, psycopg.Error)), engine.begin() as conn:
        _writer(conn, "7").write_frame(too_big)
    assert _stored(engine)["reading_id"].tolist() == [1, 2, 3, 4]
