"""What the `readings_stream` observations report: the consumer's counters (its status file, rewritten every
few seconds by `mfd stream`) and the rejected-readings count from the database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.storage.tables import rejected_readings

STATUS_FILE = "stream-status.json"  # under MFD_HOME unless `mfd stream --status-file` says otherwise


def read_status(path: Path) -> dict[str, Any]:
    """The consumer's last counters, {} when it never ran here (or the file is unreadable)."""
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def observation(path: Path, engine: Engine, now: datetime | None = None) -> dict[str, Any]:
    """Rows stored and scored by the stream, rejections, lag (received -> committed, last batch), the last
    message's time and how old the counters are (a dead consumer shows as stale)."""
    status = read_status(path)
    if sa.inspect(engine).has_table(rejected_readings.name):
        with engine.connect() as conn:
            rejected = int(conn.execute(sa.select(sa.func.count()).select_from(rejected_readings)).scalar())
    else:
        rejected = 0
    now = now or datetime.now(UTC)
    updated = status.get("updated_at")
    age = (now - datetime.fromisoformat(updated)).total_seconds() if updated else None
    return {
        "rows": int(status.get("readings", 0)),
        "scored": int(status.get("scored", 0)),
        "rejected": rejected,
        "lag_seconds": float(status.get("lag_seconds", 0.0)),
        "pending": int(status.get("pending", 0)),
        "last_message_at": status.get("last_message_at") or "never",
        "status_age_seconds": round(age, 1) if age is not None else -1.0,
        "model_version": status.get("model_version") or "none",
    }
