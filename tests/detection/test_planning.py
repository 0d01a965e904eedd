"""Every reading is requested for scoring exactly once, whatever order the loads that wrote it commit in."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mfd.detection.planning import DetectionCursor, IdRange, Snapshot, advance, plan_batches
from mfd.generator import generate_readings
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.storage.tables import predictions, readings
from mfd_assets.detection import prediction_batches
from mfd_resources import ReadingsStore, Tracking
from mfd_sensors.prediction import build_prediction_sensor


def test_an_id_that_commits_late_is_requested_when_it_appears() -> None:
    # id 2 belongs to a transaction still running (xid 101) when ids 1, 3 and 4 are visible.
    ranges, cursor = advance(DetectionCursor(), Snapshot([1, 3, 4], xmin=101, xmax=105), 100, 5)
    assert ranges == [IdRange(1, 1, 1), IdRange(3, 4, 2)]
    assert cursor == DetectionCursor(settled=1, requested=((3, 4),), horizon=(4, 105))
    ranges, cursor = advance(cursor, Snapshot([2, 3, 4], xmin=103, xmax=106), 100, 5)
    assert ranges == [IdRange(2, 2, 1)]
    assert cursor.settled == 4 and cursor.requested == ()


def test_a_gap_is_passed_once_every_transaction_that_could_fill_it_has_ended() -> None:
    ranges, cursor = advance(DetectionCursor(), Snapshot([1, 3], xmin=50, xmax=60), 100, 5)
    assert ranges == [IdRange(1, 1, 1), IdRange(3, 3, 1)] and cursor.settled == 1
    ranges, cursor = advance(cursor, Snapshot([3], xmin=55, xmax=61), 100, 5)
    assert ranges == [] and cursor.settled == 1  # the transaction that took id 2 may still commit
    ranges, cursor = advance(cursor, Snapshot([3], xmin=60, xmax=61), 100, 5)
    assert ranges == [] and cursor == DetectionCursor(settled=3)  # it rolled back: id 2 never exists


def test_quiet_database_spans_gaps_like_a_plain_cursor() -> None:
    ranges, cursor = advance(DetectionCursor(settled=10), Snapshot([12, 13, 15, 16, 17]), 2, 2)
    assert ranges == [IdRange(11, 13, 2), IdRange(14, 16, 2)]
    assert cursor == DetectionCursor(settled=16)


def test_an_old_integer_cursor_is_the_frontier() -> None:
    assert DetectionCursor.parse("17") == DetectionCursor(settled=17)
    cursor = DetectionCursor(5, ((7, 9),), (9, 42))
    assert DetectionCursor.parse(cursor.dumps()) == cursor


@st.composite
def histories(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Transactions 0..n-1 start in order (each takes a block of ids), then commit or roll back in any
    order; a tick may follow any event."""
    n = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(1, 4), min_size=n, max_size=n))
    events: list[tuple[str, int]] = []
    started, running = 0, []
    while started < n or running:
        moves = (["start"] if started < n else []) + (["end"] if running else [])
        if draw(st.sampled_from(moves)) == "start":
            events.append(("start", sizes[started]))
            running.append(started)
            started += 1
        else:
            txn = running.pop(draw(st.integers(0, len(running) - 1)))
            events.append(("commit" if draw(st.booleans()) else "abort", txn))
        if draw(st.booleans()):
            events.append(("tick", 0))
    return events


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.integers(1, 3), st.integers(1, 3))
def test_every_committed_id_is_requested_once_and_only_after_it_is_visible(
    events: list[tuple[str, int]], max_rows: int, max_batches: int
) -> None:
    next_id, blocks, running, committed = 1, [], set(), set()
    cursor, requested_at = DetectionCursor(), {}

    def tick() -> DetectionCursor:
        visible = sorted(i for txn in committed for i in blocks[txn])
        xmax = len(blocks)  # xids are 0..len-1: the next one to start is len(blocks)
        snapshot = Snapshot([i for i in visible if i > cursor.settled], min(running, default=xmax), xmax)
        ranges, after = advance(cursor, snapshot, max_rows, max_batches)
        for r in ranges:
            for i in range(r.first_id, r.last_id + 1):
                assert i not in requested_at, f"id {i} requested twice"
                requested_at[i] = i in visible  # a requested id that is not visible must never appear
        return after

    for kind, value in events:
        if kind == "start":
            blocks.append(range(next_id, next_id + value))
            running.add(len(blocks) - 1)
            next_id += value
        elif kind in ("commit", "abort"):
            running.discard(value)
            if kind == "commit":
                committed.add(value)
        else:
            cursor = tick()
    for _ in range(len(blocks) * 3 + 3):  # everything has ended: the backlog drains
        cursor = tick()
    ids = {i for txn in committed for i in blocks[txn]}
    assert {i for i, was_visible in requested_at.items() if was_visible} == ids
    assert all(requested_at[i] or i not in ids for i in requested_at)


def _reading_rows(count: int, offset: int) -> list[dict]:
    frame = load_ai4i().iloc[offset : offset + count]
    columns = [c for c in readings.columns.keys() if c not in ("id", "source") and c in frame.columns]
    return frame[columns].to_dict("records")


def test_two_loads_committing_out_of_order_on_postgresql_score_every_reading_once(
    pg_url: str, champion: Tracking
) -> None:
    store = ReadingsStore(url=pg_url)
    engine = store.engine
    sensor = build_prediction_sensor(max_rows_per_run=1000, max_runs_per_tick=5)
    slow = engine.connect()
    slow_txn = slow.begin()
    slow.execute(readings.insert(), _reading_rows(30, 0))  # takes the lower ids, commits last
    with engine.begin() as fast:
        fast.execute(readings.insert(), _reading_rows(20, 100))

    def tick(cursor: str | None) -> tuple[list[dg.RunRequest], str | None]:
        result = sensor.evaluate_tick(
            dg.build_sensor_context(cursor=cursor, resources={"readings_store": store, "tracking": champion})
        )
        for request in result.run_requests:
            config = request.run_config["ops"]["prediction_batches"]["config"]
            dg.materialize(
                [prediction_batches],
                resources={"readings_store": store, "tracking": champion},
                run_config={"ops": {"prediction_batches": {"config": config}}},
            )
        return result.run_requests, result.cursor or cursor

    first, cursor = tick(None)
    assert sum(int(r.tags["mfd/rows"]) for r in first) == 20  # only the committed load is visible
    slow_txn.commit()
    slow.close()
    second, cursor = tick(cursor)
    assert sum(int(r.tags["mfd/rows"]) for r in second) == 30  # the late load, scored now
    third, cursor = tick(cursor)
    assert third == []
    with engine.connect() as conn:
        ids = pd.read_sql(sa.select(readings.c.id), conn)["id"]
        scored = pd.read_sql(sa.select(predictions.c.reading_id), conn)["reading_id"]
    assert len(ids) == 50 and sorted(scored) == sorted(ids)
    assert plan_batches(engine, DetectionCursor.parse(cursor), 1000, 5)[0] == []


def test_every_reading_scored_fails_while_an_old_reading_has_no_prediction(
    readings_url: str, champion: Tracking
) -> None:
    store = ReadingsStore(url=readings_url)
    start = datetime.now(UTC) - timedelta(hours=2)
    store.insert(generate_readings(2, 40, seed=5, start=start, interval_s=60))  # 20 min of two machines
    ids = store.read()["id"].tolist()

    def check(first: int, last: int) -> dg.AssetCheckEvaluation:
        result = dg.materialize(
            [prediction_batches],
            resources={"readings_store": store, "tracking": champion},
            run_config={"ops": {"prediction_batches": {"config": {"first_id": first, "last_id": last}}}},
        )
        (evaluation,) = [
            e for e in result.get_asset_check_evaluations() if e.check_name == "every_reading_scored"
        ]
        return evaluation

    left = check(ids[0], ids[29])  # the newest ten readings are left unscored
    assert not left.passed
    assert left.metadata["unscored_readings"].value == 10
    assert left.metadata["first_unscored_ids"].value == ids[30:40]
    assert check(ids[30], ids[39]).passed
