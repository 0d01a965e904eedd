"""MQTT messages -> readings to store and rejections with their reasons (pure: no broker, no database).

A message on the reading tree (e.g. `plant/+/readings`) carries one reading (a JSON object) or a list of
them, keyed by the profile's source names: the machine key (or the topic's `+` level when left out), the
timestamp (ISO 8601), the segment attribute and the sensors. A micro-batch's readings are checked together
(`parse_batch`): one frame, the rule table's ranges, categories and timestamp window as column masks. A
reading those masks refuse is checked alone (`parse_reading`: the segment and sensors by the `/predict`
request model, `mfd.serving.readings.parse_readings`, built from THE rule table; the machine key and the
timestamp by their rules in `mfd.validation.READING_RULES`), which either finds it acceptable after all
or says why not. A bad message or reading becomes a rejection (reason, topic, raw payload); the good
readings of a list are kept. A machine outside `known_machines` (when given) is refused."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from mfd.profiles import NO_SEGMENT
from mfd.schema import PROFILE, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.serving.readings import READING_FIELDS, RejectedRequest, parse_readings
from mfd.validation import READING_RULES

MACHINE_FIELD = PROFILE.source_name("machine_id")
TIME_FIELD = PROFILE.source_name("timestamp")
DEFAULT_MAX_BYTES = 256 * 1024  # a message this large is refused whole
DEFAULT_MAX_READINGS = 1000  # readings in one message
PAYLOAD_CHARS = 4096  # of a refused payload kept in rejected_readings
READING_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp", SEGMENT_COLUMN, *SENSOR_COLUMNS, "source")
_SOURCE = {PROFILE.source_name(c): c for c in READING_FIELDS}  # payload field -> canonical column
_FIELDS = frozenset(_SOURCE) | {TIME_FIELD}  # a reading's fields besides the (optional) machine key


@dataclass(frozen=True)
class Rejection:
    """One refused message or reading: `key` names it (the same message redelivered gives the same key)."""

    key: str
    topic: str
    reason: str
    payload: str


@dataclass
class Parsed:
    """What a micro-batch held: its readings (`READING_COLUMNS`) and rejections."""

    readings: pd.DataFrame
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


@functools.lru_cache(maxsize=65536)
def in_tree(tree: str, topic: str) -> bool:
    """Whether `topic` matches the topic filter `tree` (MQTT wildcards `+` and `#`); remembered per topic
    (a fleet publishes on the same few thousand topics)."""
    return _tree_pattern(tree).match(topic) is not None


@functools.lru_cache(maxsize=65536)
def topic_machine(tree: str, topic: str) -> str | None:
    """The topic level at the tree's single `+` (the machine), or None; remembered per topic."""
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


def _items(topic: str, payload: bytes, tree: str, max_bytes: int, max_readings: int) -> list[object] | str:
    """The decoded readings of one message, or why the whole message is refused."""
    if len(payload) > max_bytes:
        return f"oversized: {len(payload):,} bytes, the limit is {max_bytes:,}"
    if not in_tree(tree, topic):
        return f"topic {topic!r} is outside the reading tree {tree!r}"
    try:
        items = _listed(json.loads(payload))
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not JSON: {exc}"
    if isinstance(items, list) and len(items) > max_readings:
        return f"{len(items):,} readings in one message; the limit is {max_readings:,}"
    return items


@dataclass
class _Item:
    """One decoded reading and where it came from."""

    value: object
    topic: str
    payload: bytes
    index: int | None  # its place in a list, None for a message of one reading
    machine_in_topic: str | None


def _machine_ok(item: dict[str, Any], from_topic: str | None, limit: int) -> str | None:
    """The machine id of a reading with exactly the expected fields and an acceptable key, else None."""
    keys = item.keys()
    if keys == _FIELDS:
        machine = from_topic
    elif len(keys) == len(_FIELDS) + 1 and MACHINE_FIELD in keys and keys - {MACHINE_FIELD} == _FIELDS:
        machine = item[MACHINE_FIELD]
        if from_topic is not None and machine != from_topic:
            return None
    else:
        return None
    return machine if type(machine) is str and 0 < len(machine) <= limit else None


def _numbers(column: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """(values as floats, whether each is a JSON number: int or float, not bool) of one sensor column."""
    if column.dtype.kind in "if":
        return column.to_numpy("float64"), np.ones(len(column), dtype=bool)
    number = column.map(lambda v: type(v) in (int, float)).to_numpy(dtype=bool)
    return pd.to_numeric(column.where(number), errors="coerce").to_numpy("float64"), number


def _checked(
    items: list[_Item], window: tuple[pd.Timestamp, pd.Timestamp]
) -> tuple[pd.DataFrame, np.ndarray]:
    """The readings in `READING_COLUMNS` and which of them pass every rule (checked as columns)."""
    limit = READING_RULES["machine_id"].max_length or 64
    machines = [
        _machine_ok(i.value, i.machine_in_topic, limit) if isinstance(i.value, dict) else None for i in items
    ]
    ok = np.array([m is not None for m in machines], dtype=bool)
    raw = pd.DataFrame.from_records(
        [i.value if m is not None else {} for i, m in zip(items, machines, strict=True)]
    )
    raw = raw.reindex(columns=[TIME_FIELD, *_SOURCE])
    text = raw[TIME_FIELD].map(lambda v: type(v) is str).to_numpy(dtype=bool)
    stamps = pd.to_datetime(raw[TIME_FIELD].where(text), utc=True, errors="coerce", format="ISO8601")
    ok &= (
        text & stamps.notna().to_numpy() & (stamps >= window[0]).to_numpy() & (stamps <= window[1]).to_numpy()
    )
    out = {"machine_id": machines, "timestamp": stamps}
    for source, column in _SOURCE.items():
        rule = READING_RULES[column]
        if rule.kind == "category":
            ok &= raw[source].isin(rule.allowed).to_numpy()
            out[column] = raw[source]
            continue
        values, number = _numbers(raw[source])
        with np.errstate(invalid="ignore"):
            ok &= number & np.isfinite(values) & (values >= rule.range.low) & (values <= rule.range.high)
        out[column] = values
    if not PROFILE.segment_column:
        out[SEGMENT_COLUMN] = NO_SEGMENT
    out["source"] = [f"mqtt:{i.topic}" for i in items]
    return pd.DataFrame(out, columns=list(READING_COLUMNS)), ok


def _refusal(item: _Item, reason: str, listed: bool) -> Rejection:
    raw = json.dumps(item.value, default=str).encode() if listed else item.payload
    text = f"readings[{item.index}]: {reason}" if listed else reason
    return Rejection(message_key(item.topic, item.payload, item.index), item.topic, text, payload_text(raw))


def parse_batch(
    messages: Sequence[tuple[str, bytes]],
    tree: str,
    now: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_readings: int = DEFAULT_MAX_READINGS,
    known_machines: frozenset[str] | None = None,
) -> Parsed:
    """The readings of a micro-batch's (topic, payload) messages and its rejections (module docstring)."""
    rejections, items = [], []
    for topic, payload in messages:
        decoded = _items(topic, payload, tree, max_bytes, max_readings)
        if isinstance(decoded, str):
            rejections.append(
                Rejection(message_key(topic, payload, None), topic, decoded, payload_text(payload))
            )
            continue
        machine = topic_machine(tree, topic)
        listed = len(decoded) > 1
        items += [_Item(v, topic, payload, i if listed else None, machine) for i, v in enumerate(decoded)]
    window = _window(now)
    if not items:
        return Parsed(pd.DataFrame(columns=list(READING_COLUMNS)), rejections)
    frame, ok = _checked(items, window)
    frame["item"] = np.arange(len(items))
    kept, late = [frame[ok]], []
    for at in np.flatnonzero(~ok):  # refused by a mask: checked alone, for the reason (or a pass after all)
        item = items[at]
        parsed = parse_reading(item.value, item.machine_in_topic, window)
        if isinstance(parsed, str):
            rejections.append(_refusal(item, parsed, item.index is not None))
        else:
            late.append({**parsed, "source": f"mqtt:{item.topic}", "item": at})
    if late:
        kept.append(pd.DataFrame(late, columns=frame.columns).astype(frame.dtypes.to_dict()))
    frame = pd.concat(kept, ignore_index=True) if len(kept) > 1 else kept[0]
    if known_machines is not None:
        unknown = ~frame["machine_id"].isin(known_machines)
        for at, machine in zip(frame.loc[unknown, "item"], frame.loc[unknown, "machine_id"], strict=True):
            reason = f"unknown machine {machine!r} (not among the {len(known_machines):,} known machines)"
            rejections.append(_refusal(items[at], reason, items[at].index is not None))
        frame = frame[~unknown]
    return Parsed(frame[list(READING_COLUMNS)].reset_index(drop=True), rejections)
