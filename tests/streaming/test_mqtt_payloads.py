"""`parse_batch` checks a micro-batch as one frame; what it accepts and why it refuses must be what the
request model says of each reading alone (`parse_reading`), whatever else shares the batch."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from mfd.generator import generate_readings
from mfd.generator.mqtt import reading_payloads
from mfd.schema import PROFILE
from mfd.streaming.payloads import READING_COLUMNS, _window, parse_batch, parse_reading, topic_machine

TREE = "plant/+/readings"


def _messages() -> list[tuple[str, bytes]]:
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    good = reading_payloads(generate_readings(5, 40, 7, start, interval_s=1.0), PROFILE)
    sensor = PROFILE.sensor_columns[0]
    changes = [
        {sensor: True},
        {sensor: "42"},
        {sensor: None},
        {sensor: 1e300},
        {sensor: -1e300},
        {"machine_id": 5},
        {"machine_id": ""},
        {"timestamp": 5},
        {"timestamp": "not a time"},
        {"timestamp": "1990-01-01T00:00:00Z"},
        {"timestamp": "2026-12-07 10:00"},  # not ISO 8601 with a T: the per-reading check may still take it
        {"extra": 1},
    ]
    bad = []
    for i, change in enumerate(changes):
        topic, payload = good[i]
        bad.append((topic, json.dumps({**json.loads(payload), **change}).encode()))
    topic, payload = good[-1]
    bad.append((topic, json.dumps({k: v for k, v in json.loads(payload).items() if k != sensor}).encode()))
    bad.append((topic, json.dumps([json.loads(payload), 3]).encode()))
    return good[len(changes) :] + bad


def _one_by_one(
    messages: list[tuple[str, bytes]], now: datetime, known: frozenset[str] | None
) -> tuple[pd.DataFrame, list[str]]:
    rows, reasons = [], []
    for topic, payload in messages:
        items = json.loads(payload)
        listed = isinstance(items, list)
        for index, item in enumerate(items if listed else [items]):
            parsed = parse_reading(item, topic_machine(TREE, topic), _window(now))
            if known is not None and isinstance(parsed, dict) and parsed["machine_id"] not in known:
                parsed = (
                    f"unknown machine {parsed['machine_id']!r} (not among the {len(known)} known machines)"
                )
            if isinstance(parsed, str):
                reasons.append(f"readings[{index}]: {parsed}" if listed else parsed)
            else:
                rows.append({**parsed, "source": f"mqtt:{topic}"})
    return pd.DataFrame(rows, columns=list(READING_COLUMNS)), reasons


@pytest.mark.parametrize("known", [None, "first"])
def test_mqtt_payload_frame_checks_agree_with_the_request_model(known: str | None) -> None:
    messages, now = _messages(), datetime.now(UTC)
    machines = None if known is None else frozenset({json.loads(messages[0][1])["machine_id"]})
    rows, reasons = _one_by_one(messages, now, machines)
    parsed = parse_batch(messages, TREE, now, known_machines=machines)
    assert sorted(r.reason for r in parsed.rejections) == sorted(reasons)
    key = ["machine_id", "timestamp", "source"]
    got = parsed.readings.sort_values(key, ignore_index=True)
    want = rows.sort_values(key, ignore_index=True).astype(got.dtypes.to_dict())
    pd.testing.assert_frame_equal(got, want)
    assert len(parsed.rejections) >= 12  # the refused changes are refused (and the guard sees them)
