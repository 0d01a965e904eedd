"""Which objects under `incoming/` to hand out, and which are stuck: the state behind `incoming_files_sensor`.

`incoming/` holds only files that wait (ingestion moves each to `processed/` or `rejected/`), so every
tick lists all of it: a file copied in with an old modification time (`cp -p`, `mv`, rsync) is as new as
any other. The cursor remembers each version (`key@etag`) handed out while it is still listed, with when it
was handed out and how often; a version that is still there `STUCK_AFTER` later is *stuck* (its run failed
or never started): the sensor hands it out again, up to `MAX_ATTEMPTS`, then reports it. A changed file
under the same name has a new ETag, so it is new again.

Partition keys: Dagster refuses some substrings in partition names (`...`, control characters), and an
object key may contain them. `partition_key` escapes them (and `%`) as `%XX`; `object_key` undoes it, so
every object key has a partition and ordinary keys are their own partition key.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from urllib.parse import unquote

from mfd.ingestion.maintenance import is_maintenance
from mfd.storage.objects import INCOMING, PERIPHERAL_PREFIX, ObjectInfo, Objects

MAX_PER_TICK = 50
STUCK_AFTER = timedelta(minutes=10)
MAX_ATTEMPTS = 3
_ESCAPE = re.compile(r"%|\.\.\.|[\x00-\x1f\x7f]")


def partition_key(key: str) -> str:
    """The partition key of object `key`: `%`, `...` and control characters escaped as `%XX`."""
    return _ESCAPE.sub(lambda m: "".join(f"%{ord(c):02X}" for c in m.group()), key)


def object_key(partition: str) -> str:
    """The object key a partition key stands for (inverse of `partition_key`)."""
    return unquote(partition)


def version(obj: ObjectInfo) -> str:
    """`key@etag`: one version of one object; also the sensor's first run key."""
    return f"{obj.key}@{obj.etag}"


def is_peripheral(key: str) -> bool:
    return key.startswith(PERIPHERAL_PREFIX)


@dataclass(frozen=True)
class Handout:
    """When a version was last handed out and how many times."""

    at: datetime
    attempts: int = 1


@dataclass(frozen=True)
class IncomingCursor:
    """The versions handed out that were still under `incoming/` at the last look."""

    handed_out: dict[str, Handout] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> IncomingCursor:
        """From the sensor's cursor; the old look-back cursor (`seen` with times) counts as handed out once."""
        if not text:
            return cls()
        data = json.loads(text)
        if "seen" in data:
            return cls({v: Handout(datetime.fromisoformat(at)) for v, at in data["seen"].items()})
        return cls(
            {
                v: Handout(datetime.fromisoformat(h["at"]), int(h["attempts"]))
                for v, h in data["handed_out"].items()
            }
        )

    def retried(self, obj: ObjectInfo, now: datetime) -> IncomingCursor:
        """This cursor after `obj` was handed out again."""
        attempts = self.handed_out[version(obj)].attempts + 1
        return IncomingCursor({**self.handed_out, version(obj): Handout(now, attempts)})

    def dumps(self) -> str:
        return json.dumps(
            {
                "handed_out": {
                    v: {"at": h.at.isoformat(), "attempts": h.attempts} for v, h in self.handed_out.items()
                }
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class Tick:
    """What one look at `incoming/` found: versions to hand out for the first time, stuck versions (with
    the attempts they already had), versions that ran out of attempts, and the next cursor."""

    new: list[ObjectInfo]
    stuck: list[tuple[ObjectInfo, int]]
    given_up: list[ObjectInfo]
    cursor: IncomingCursor


def look(objects: Objects, cursor: IncomingCursor, now: datetime, limit: int = MAX_PER_TICK) -> Tick:
    """List all of `incoming/` (oldest first; `incoming/maintenance/` is `mfd.ingestion.maintenance`'s): up
    to `limit` new versions, the stuck ones, and a cursor that forgets versions no longer listed (they were
    ingested)."""
    listing = [o for o in objects.list(INCOMING) if not o.key.endswith("/") and not is_maintenance(o.key)]
    listed = {version(o) for o in listing}
    known = {v: h for v, h in cursor.handed_out.items() if v in listed}
    new = [o for o in listing if version(o) not in known][:limit]
    stuck, given_up = [], []
    for obj in listing:
        handout = known.get(version(obj))
        if handout is None or now - handout.at < STUCK_AFTER:
            continue
        if handout.attempts < MAX_ATTEMPTS:
            stuck.append((obj, handout.attempts))
        else:
            given_up.append(obj)
    handed_out = {**known, **{version(o): Handout(now) for o in new}}
    return Tick(new, stuck, given_up, IncomingCursor(handed_out))
