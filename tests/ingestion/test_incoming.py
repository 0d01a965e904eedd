"""Nothing waits in incoming/ without a word: old modification times, failed runs and odd keys."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mfd.ingestion.incoming import (
    MAX_ATTEMPTS,
    STUCK_AFTER,
    IncomingCursor,
    look,
    object_key,
    partition_key,
    position,
)
from mfd.storage.objects import LocalObjects
from mfd_resources import LocalObjectStore
from mfd_sensors.compat import INVALID_PARTITION_SUBSTRINGS
from mfd_sensors.incoming import incoming_files_sensor


@given(st.text())
def test_every_object_key_has_a_partition_key_and_back(key: str) -> None:
    partition = partition_key(key)
    assert not any(bad in partition for bad in INVALID_PARTITION_SUBSTRINGS)
    assert object_key(partition) == key


@pytest.fixture
def settled_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The local store treats a file as settled as soon as it is listed (tests not about files in flight)."""
    monkeypatch.setattr(LocalObjects, "settle", timedelta(0))


@pytest.mark.usefixtures("settled_at_once")
def test_a_file_copied_with_an_old_modification_time_is_picked_up(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path / "objects"))
    objects = store.objects()
    objects.put("incoming/first.csv", b"a")
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), resources={"object_store": store}
    ) as ctx:
        first = incoming_files_sensor(ctx)
    objects.put("incoming/old.csv", b"b")  # then `cp -p`: last modified a year ago, long before the cursor
    year_ago = (datetime.now(UTC) - timedelta(days=365)).timestamp()
    os.utime(tmp_path / "objects" / "incoming" / "old.csv", (year_ago, year_ago))
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=first.cursor, resources={"object_store": store}
    ) as ctx:
        second = incoming_files_sensor(ctx)
    assert [r.partition_key for r in second.run_requests] == ["incoming/old.csv"]


def test_a_version_still_waiting_is_handed_out_again_then_reported(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "objects")
    objects.put("incoming/a.csv", b"x")
    now = datetime.now(UTC) + LocalObjects.settle  # settled
    tick = look(objects, IncomingCursor(), now)
    assert [o.key for o in tick.new] == ["incoming/a.csv"] and tick.stuck == []
    cursor = tick.cursor
    assert look(objects, cursor, now + STUCK_AFTER / 2).stuck == []  # its run may still be going
    for attempt in range(1, MAX_ATTEMPTS):
        now += STUCK_AFTER
        tick = look(objects, cursor, now)
        assert tick.new == [] and [(o.key, n) for o, n in tick.stuck] == [("incoming/a.csv", attempt)]
        cursor = tick.cursor.retried_now(tick.stuck[0][0], now)
    tick = look(objects, cursor, now + STUCK_AFTER)
    assert tick.stuck == [] and [o.key for o in tick.given_up] == ["incoming/a.csv"]
    objects.move("incoming/a.csv", "processed/a.csv")  # ingested at last: forgotten
    assert look(objects, cursor, now + STUCK_AFTER).cursor.retried == {}


@pytest.mark.usefixtures("settled_at_once")
def test_the_sensor_requests_a_stuck_version_again_with_a_new_run_key(tmp_path: Path) -> None:
    store = LocalObjectStore(root=str(tmp_path / "objects"))
    store.objects().put("incoming/a.csv", b"x")
    [obj] = store.objects().list("incoming/")
    handed_out_long_ago = IncomingCursor(after=position(obj))  # no mark of the last STUCK_AFTER reaches it
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(),
        cursor=handed_out_long_ago.dumps(),
        resources={"object_store": store},
    ) as ctx:
        again = incoming_files_sensor(ctx)
    (request,) = again.run_requests
    assert request.run_key.endswith("#attempt-2") and request.partition_key == "incoming/a.csv"
    assert IncomingCursor.parse(again.cursor).retried[request.tags["mfd/version"]].attempts == 2
