"""MQTT messages -> readings to store and rejections with their reasons (pure: no broker, no database).

A message on the reading tree (e.g. `plant/+/readings`) carries one reading (a JSON object) or a list of
them, keyed by the profile's source names: the machine key (or the topic's `+` level when left out), the
timestamp (ISO 8601), the segment attribute and the sensors. The segment and sensors are checked by the
`/predict` request model (`mfd.serving.readings.parse_readings`, built from THE rule table), the machine
key and the timestamp by their rules in `mfd.validation.READING_RULES`. A bad message or reading becomes a
rejection (reason, topic, raw payload); the good readings of a list are kept."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from mfd.schema import PROFILE
from mfd.serving.readings import RejectedRequest, parse_readings
from mfd.validation import READING_RULES

MACHINE_FIELD = PROFILE.source_name("machine_id")
TIME_FIELD = PROFILE.source_name("timestamp")
DEFAULT_MAX_BYTES = 256 * 1024  # a message this large is refused whole
DEFAULT_MAX_READINGS = 1000  # readings in one message
PAYLOAD_CHARS = 4096  # of a refused payload kept in rejected_readings


@dataclass(frozen=True)
class Rejection:
    """One refused message or reading: `key` names it (the same message redelivered gives the same key)."""

    key: str
    topic: str
    reason: str
    payload: str


@dataclass
class Parsed:
    """What a message held: readings (canonical names, plus `source`) and rejections."""

    readings: list[dict[str, Any]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


def payload_text(payload: bytes, limit: int = PAYLOAD_CHARS) -> str:
    """The raw payload as storable text (invalid UTF-8 escaped, NUL shown), cut at `limit` characters."""
    text = payload[: limit * 4].decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[:limit] + f"... ({len(payload):,} bytes)"


def message_key(topic: str, payload: bytes, index: int | None) -> str:
    digest = hashlib.sha256(topic.encode() + b"\0" + payload).hexdigest()[:40]
    return f"{digest}:{'message' if index is None else index}"


@functools.lru_cache(maxsize=16)
def _tree_pattern(tree: str) -> re.Pattern[str]:
    """The topic filter `tree` as a regular expression (`+`: one level, captured; `#`: the rest), compiled
    once: paho's `topic_matches_sub` builds a matcher per call (~0.3 ms, more than parsing the reading)."""
    parts = []
    for level in tree.split("/"):
        parts.append("([^/]*)" if level == "+" else ".*" if level == "#" else re.escape(level))
    return re.compile("/".join(parts).replace("/.*", "(?:/.*)?") + r"\Z")


def in_tree(tree: str, topic: str) -> bool:
    """Whether `topic` matches the topic filter `tree` (MQTT wildcards `+` and `#`)."""
    return _tree_pattern(tree).match(topic) is not None


def topic_machine(tree: str, topic: str) -> str | None:
    """The topic level at the tree's single `+` (the machine), or None."""
    match = _tree_pattern(tree).match(topic)
    return match.group(1) if match is not None and tree.split("/").count("+") == 1 else None


@functools.lru_cache(maxsize=4)
def _window(now: datetime) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The plausible reading times at `now` (one computation per micro-batch, which shares `now`)."""
    return READING_RULES["timestamp"].window.pinned(now).bounds()


def _timestamp(value: object, window: tuple[pd.Timestamp, pd.Timestamp]) -> pd.Timestamp | str:
    """The reading's time as UTC, or why it is refused."""
    if not isinstance(value, str):
        return f"{TIME_FIELD} must be an ISO 8601 string (got {value!r})"
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        return f"{TIME_FIELD} {value!r} is not an ISO 8601 time"
    if pd.isna(stamp):
        return f"{TIME_FIELD} {value!r} is not an ISO 8601 time"
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if not window[0] <= stamp <= window[1]:
        return f"{TIME_FIELD} {value} {READING_RULES['timestamp'].window.describe()}"
    return stamp


def _machine(value: object, from_topic: str | None) -> str | tuple[str]:
    """The machine id (from the reading, else the topic), or (why it is refused,)."""
    limit = READING_RULES["machine_id"].max_length or 64
    if value is None:
        value = from_topic
    elif from_topic is not None and value != from_topic:
        return (f"{MACHINE_FIELD} {value!r} differs from the topic's machine {from_topic!r}",)
    if not isinstance(value, str) or not value or len(value) > limit:
        return (f"{MACHINE_FIELD} must be a text of 1-{limit} characters (got {value!r})",)
    return value


def parse_reading(
    item: object, machine_in_topic: str | None, window: tuple[pd.Timestamp, pd.Timestamp]
) -> dict[str, Any] | str:
    """One reading in canonical names, or why it is refused."""
    if not isinstance(item, dict):
        return f"a reading must be a JSON object (got {type(item).__name__})"
    fields = dict(item)
    machine = _machine(fields.pop(MACHINE_FIELD, None), machine_in_topic)
    if isinstance(machine, tuple):
        return machine[0]
    if TIME_FIELD not in fields:
        return f"{TIME_FIELD} missing"
    stamp = _timestamp(fields.pop(TIME_FIELD), window)
    if isinstance(stamp, str):
        return stamp
    try:
        (values,) = parse_readings([fields], 1)
    except RejectedRequest as exc:
        return str(exc).replace("readings[0].", "")
    return {"machine_id": machine, "timestamp": stamp, **values}


def _listed(data: object) -> list[object] | str:
    if isinstance(data, dict):
        return [data]
    if not isinstance(data, list):
        return f"wrong shape: a JSON object or a list of objects, got {type(data).__name__}"
    return data if data else "wrong shape: an empty list"


def parse_message(
    topic: str,
    payload: bytes,
    tree: str,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_readings: int = DEFAULT_MAX_READINGS,
) -> Parsed:
    """The readings of one message on `topic` and its rejections (see the module docstring)."""
    out = Parsed()

    def refuse(reason: str, index: int | None = None, raw: bytes = payload) -> None:
        out.rejections.append(Rejection(message_key(topic, payload, index), topic, reason, payload_text(raw)))

    if len(payload) > max_bytes:
        refuse(f"oversized: {len(payload):,} bytes, the limit is {max_bytes:,}")
        return out
    if not in_tree(tree, topic):
        refuse(f"topic {topic!r} is outside the reading tree {tree!r}")
        return out
    try:
        items = _listed(json.loads(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        refuse(f"not JSON: {exc}")
        return out
    if isinstance(items, str):
        refuse(items)
        return out
    if len(items) > max_readings:
        refuse(f"{len(items):,} readings in one message; the limit is {max_readings:,}")
        return out
    window = _window(now)
    machine_in_topic = topic_machine(tree, topic)
    for index, item in enumerate(items):
        parsed = parse_reading(item, machine_in_topic, window)
        if isinstance(parsed, str):
            raw = json.dumps(item, default=str).encode() if len(items) > 1 else payload
            refuse(f"readings[{index}]: {parsed}" if len(items) > 1 else parsed, index, raw)
        else:
            out.readings.append({**parsed, "source": f"mqtt:{topic}"})
    return out
