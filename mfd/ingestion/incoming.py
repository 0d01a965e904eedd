"""Which objects under `incoming/` are new since the last look: the state behind `incoming_files_sensor`.

The cursor keeps the latest last-modified time seen plus the objects (key and ETag) modified within a
look-back window before it. S3 timestamps have one-second resolution, and a multipart upload carries the
time it started, so objects can appear "in the past"; listing from the window's start and skipping the
(key, ETag) pairs already seen catches them without ever handing out the same version twice. A changed
file under the same name has a new ETag, so it is new again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mfd.storage.objects import INCOMING, PERIPHERAL_PREFIX, ObjectInfo, Objects

LOOKBACK = timedelta(minutes=5)
MAX_PER_TICK = 50


@dataclass(frozen=True)
class IncomingCursor:
    """Latest last-modified seen and the `key@etag` versions seen within LOOKBACK of it."""

    last_modified: datetime | None = None
    seen: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> IncomingCursor:
        if not text:
            return cls()
        data = json.loads(text)
        if not data["last_modified"]:
            return cls()
        return cls(
            datetime.fromisoformat(data["last_modified"]),
            {version: datetime.fromisoformat(at) for version, at in data["seen"].items()},
        )

    def dumps(self) -> str:
        return json.dumps(
            {
                "last_modified": self.last_modified.isoformat() if self.last_modified else None,
                "seen": {version: at.isoformat() for version, at in self.seen.items()},
            },
            sort_keys=True,
        )

    def list_from(self) -> datetime | None:
        """List objects modified after this time (the start of the look-back window, exclusive)."""
        return (
            None if self.last_modified is None else self.last_modified - LOOKBACK - timedelta(microseconds=1)
        )


def version(obj: ObjectInfo) -> str:
    """`key@etag`: one version of one object; also the sensor's run key."""
    return f"{obj.key}@{obj.etag}"


def is_peripheral(key: str) -> bool:
    return key.startswith(PERIPHERAL_PREFIX)


def new_objects(
    objects: Objects, cursor: IncomingCursor, limit: int = MAX_PER_TICK
) -> tuple[list[ObjectInfo], IncomingCursor]:
    """Up to `limit` object versions under `incoming/` not handed out before (oldest first), and the
    cursor that remembers them."""
    listing = objects.list(INCOMING, since=cursor.list_from())
    fresh = [o for o in listing if not o.key.endswith("/") and version(o) not in cursor.seen][:limit]
    if not fresh:
        return [], cursor
    latest = max([o.last_modified for o in fresh] + ([cursor.last_modified] if cursor.last_modified else []))
    seen = {**cursor.seen, **{version(o): o.last_modified for o in fresh}}
    window_start = latest - LOOKBACK
    return fresh, IncomingCursor(latest, {v: at for v, at in seen.items() if at >= window_start})
