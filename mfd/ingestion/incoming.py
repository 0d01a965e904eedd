"""Which objects under `incoming/` to hand out, and which are stuck: the state behind `incoming_files_sensor`.

`incoming/` holds only files that wait (ingestion moves each to `processed/` or `rejected/`); every tick lists
it (no byte of a file is read: the local store's ETag is its `stat`) and walks it in arrival order, (last
modified, key): S3's LastModified is the upload's, the local store's is when the file last changed or
arrived (a `cp -p` or `mv` counts from its arrival). The cursor is a position in that order, so it stays the
same size however many files were handed out or processed: `after`, the last version handed out; `marks`,
where `after` stood at each tick of the last `STUCK_AFTER` (so when any version was handed out is known
without remembering it); `retried`, the few versions requested again (at most `MAX_RETRIED`).

A version is handed out once it has *settled*: unchanged for the store's `settle` (zero on S3, where a put is
atomic; one listing interval locally, i.e. the same size and ETag at two listings). Handing out stops at the
first version that has not settled, so the cursor never passes a file still being written. A version at or
before `after` still listed `STUCK_AFTER` after it was handed out is *stuck* (its run failed or never
started; or it arrived with a last-modified time before the cursor, like an S3 multipart upload begun
earlier): the sensor hands it out again, up to `MAX_ATTEMPTS`, then reports it. A changed file under the same
name has a new ETag and a new last-modified time, so it is new again.

Partition keys: Dagster refuses some substrings in partition names (`...`, control characters), and an
object key may contain them. `partition_key` escapes them (and `%`) as `%XX`; `object_key` undoes it, so
every object key has a partition and ordinary keys are their own partition key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import unquote

from mfd.ingestion.maintenance import is_maintenance
from mfd.storage.objects import INCOMING, PERIPHERAL_PREFIX, ObjectInfo, Objects

MAX_PER_TICK = 50
STUCK_AFTER = timedelta(minutes=10)
MAX_ATTEMPTS = 3
MAX_RETRIED = 200  # versions requested again that the cursor remembers (the oldest are forgotten first)
_ESCAPE = re.compile(r"%|\.\.\.|[\x00-\x1f\x7f]")
_LONG_AGO = datetime.min.replace(tzinfo=UTC)

Position = tuple[datetime, str]  # (last modified, key): the order versions are handed out in


def partition_key(key: str) -> str:
    """The partition key of object `key`: `%`, `...` and control characters escaped as `%XX`."""
    return _ESCAPE.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), key)


def object_key(partition: str) -> str:
    """The object key a partition key stands for (inverse of `partition_key`)."""
    return unquote(partition)


def version(obj: ObjectInfo) -> str:
    """`key@etag`: one version of one object; also the sensor's first run key."""
    return f"{obj.key}@{obj.etag}"


def position(obj: ObjectInfo) -> Position:
    return (obj.last_modified, obj.key)


def is_peripheral(key: str) -> bool:
    return key.startswith(PERIPHERAL_PREFIX)


@dataclass(frozen=True)
class Handout:
    """When a version was last handed out and how many times."""

    at: datetime
    attempts: int = 1


@dataclass(frozen=True)
class IncomingCursor:
    """How far the walk through `incoming/` has got (see the module docstring); bounded in size."""

    after: Position | None = None
    marks: tuple[tuple[datetime, Position], ...] = ()  # (tick time, `after` then), oldest first
    retried: dict[str, Handout] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> IncomingCursor:
        """From the sensor's cursor; an older cursor (every version remembered) starts the walk over: the
        versions it requested come again with the same run keys, which Dagster does not run twice."""
        if not text:
            return cls()
        data = json.loads(text)
        if data.get("v") != 2:
            return cls()
        return cls(
            after=_position(data["after"]) if data["after"] else None,
            marks=tuple((_time(at), _position(p)) for at, p in data["marks"]),
            retried={v: Handout(_time(at), int(n)) for v, (at, n) in data["retried"].items()},
        )

    def handed_out_at(self, pos: Position) -> datetime:
        """When the version at `pos` (at or before `after`) was handed out: the first mark that reached it;
        long ago when no mark of the last `STUCK_AFTER` did."""
        for at, reached in self.marks:
            if pos <= reached:
                return at
        return _LONG_AGO

    def retried_now(self, obj: ObjectInfo, now: datetime) -> IncomingCursor:
        """This cursor after `obj` was handed out again."""
        attempts = self.retried.get(version(obj), Handout(now)).attempts + 1
        retried = {**self.retried, version(obj): Handout(now, attempts)}
        if len(retried) > MAX_RETRIED:
            retried = dict(sorted(retried.items(), key=lambda kv: kv[1].at)[-MAX_RETRIED:])
        return IncomingCursor(self.after, self.marks, retried)

    def dumps(self) -> str:
        return json.dumps(
            {
                "v": 2,
                "after": _dump_position(self.after) if self.after else None,
                "marks": [[at.isoformat(), _dump_position(p)] for at, p in self.marks],
                "retried": {v: [h.at.isoformat(), h.attempts] for v, h in self.retried.items()},
            },
            sort_keys=True,
        )


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _position(data: list[str]) -> Position:
    return (_time(data[0]), data[1])


def _dump_position(pos: Position) -> list[str]:
    return [pos[0].isoformat(), pos[1]]


@dataclass(frozen=True)
class Tick:
    """What one look at `incoming/` found: versions to hand out for the first time, stuck versions (with
    the attempts they already had), versions that ran out of attempts, versions not settled yet, and the
    next cursor."""

    new: list[ObjectInfo]
    stuck: list[tuple[ObjectInfo, int]]
    given_up: list[ObjectInfo]
    cursor: IncomingCursor
    unsettled: int = 0


def waiting(objects: Objects) -> list[ObjectInfo]:
    """The files under `incoming/` in arrival order (`incoming/maintenance/` is
    `mfd.ingestion.maintenance`'s)."""
    listing = [o for o in objects.list(INCOMING) if not o.key.endswith("/") and not is_maintenance(o.key)]
    return sorted(listing, key=position)


def settled(obj: ObjectInfo, now: datetime, settle: timedelta) -> bool:
    """Whether `obj` has stayed unchanged for `settle` (always, on a store whose put is atomic)."""
    return settle <= timedelta(0) or now - obj.last_modified >= settle


def look(objects: Objects, cursor: IncomingCursor, now: datetime, limit: int = MAX_PER_TICK) -> Tick:
    """One walk through `incoming/`: up to `limit` settled versions past the cursor, up to `limit` stuck
    ones (the oldest first), the ones out of attempts, and the next cursor."""
    listing = waiting(objects)
    settle = getattr(objects, "settle", timedelta(0))
    new, unsettled = [], 0
    for obj in listing:
        if cursor.after is not None and position(obj) <= cursor.after:
            continue
        if not settled(obj, now, settle):
            unsettled = sum(1 for o in listing if cursor.after is None or position(o) > cursor.after) - len(
                new
            )
            break
        if len(new) < limit:
            new.append(obj)
    stuck, given_up = _stuck(listing, cursor, now, limit)
    after = position(new[-1]) if new else cursor.after
    marks = tuple((at, p) for at, p in cursor.marks if now - at < STUCK_AFTER)
    if new and after is not None:
        marks += ((now, after),)
    listed = {version(o) for o in listing}
    retried = {v: h for v, h in cursor.retried.items() if v in listed}
    return Tick(new, stuck, given_up, IncomingCursor(after, marks, retried), unsettled)


def _stuck(
    listing: list[ObjectInfo], cursor: IncomingCursor, now: datetime, limit: int
) -> tuple[list[tuple[ObjectInfo, int]], list[ObjectInfo]]:
    """Versions at or before the cursor still waiting `STUCK_AFTER` after they were last handed out: up
    to `limit` to hand out again (with their attempts so far), and those out of attempts."""
    stuck: list[tuple[ObjectInfo, int]] = []
    given_up: list[ObjectInfo] = []
    if cursor.after is None:
        return stuck, given_up
    for obj in listing:
        if position(obj) > cursor.after:
            break
        handout = cursor.retried.get(version(obj)) or Handout(cursor.handed_out_at(position(obj)))
        if now - handout.at < STUCK_AFTER:
            continue
        if handout.attempts >= MAX_ATTEMPTS:
            given_up.append(obj)
        elif len(stuck) < limit:
            stuck.append((obj, handout.attempts))
    return stuck, given_up
