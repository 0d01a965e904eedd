"""The alert outbox: one row per failure event, written in the transaction that writes the event (so an
event never exists without its alert, nor an alert without its event), and delivered to the webhooks at
least once by `deliver_due`, outside detection.

Delivery: due `pending` rows in reading-time order, each in its own short transaction (PostgreSQL: locked
with SKIP LOCKED, so two deliverers never post one row at once). A row is `suppressed` when another alert
of the same machine lies within the dedup window before it; otherwise it is posted to every target that has
not taken it yet, with its idempotency key, and becomes `delivered` once all have. A failed post keeps the
row `pending` with the reason and the next attempt after an exponential backoff; a target that failed is
not tried again in the same pass, so a slow or dead one costs one timeout per pass, not one per alert."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.alerts.webhooks import DeliveryFailed, Target, post
from mfd.storage.bulk import BulkWriter
from mfd.storage.tables import alert_outbox, ensure_alert_tables, failure_events

PENDING, DELIVERED, SUPPRESSED, WITHDRAWN = "pending", "delivered", "suppressed", "withdrawn"
BACKOFF_BASE_S = 5.0
BACKOFF_CAP_S = 600.0
_ENQUEUED = ("idempotency_key", "reading_id", "machine_id", "timestamp", "payload")

Post = Callable[[Target, dict[str, Any], str, float], None]


def idempotency_key(reading_id: int) -> str:
    """One key per failure event (per reading): a re-run, or another model flagging it again, is no new alert."""
    return f"mfd-failure-event-{int(reading_id)}"


def backoff(attempts: int) -> timedelta:
    """Wait before attempt `attempts + 1`: 5 s, 10 s, 20 s, ... at most 10 minutes."""
    return timedelta(seconds=min(BACKOFF_BASE_S * 2 ** max(attempts - 1, 0), BACKOFF_CAP_S))


def alert_payload(event: dict[str, Any]) -> str:
    """The alert of one event as JSON (the generic webhook body)."""
    ts = pd.Timestamp(event["timestamp"])
    return json.dumps(
        {
            "idempotency_key": idempotency_key(event["reading_id"]),
            "event": "predicted_failure",
            "reading_id": int(event["reading_id"]),
            "machine_id": str(event["machine_id"]),
            "machine_type": str(event["machine_type"]),
            "timestamp": ts.isoformat(),
            "probability": round(float(event["probability"]), 6),
            "threshold": round(float(event["threshold"]), 6),
            "model_name": str(event["model_name"]),
            "model_version": str(event["model_version"]),
            "top_features": json.loads(event["top_features"]),
            "explainer": event.get("explainer", ""),
            "nearest_rule": event["nearest_rule"],
        }
    )


def enqueue(conn: sa.Connection, events: pd.DataFrame, now: datetime) -> int:
    """Add the alerts of `events` (columns of `alert_payload`) on `conn`'s transaction; an event already
    in the outbox keeps its row (same idempotency key). Returns the rows added."""
    if events.empty:
        return 0
    rows = pd.DataFrame(
        {
            "idempotency_key": [idempotency_key(i) for i in events["reading_id"]],
            "reading_id": events["reading_id"].astype("int64").to_numpy(),
            "machine_id": events["machine_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(events["timestamp"], utc=True).to_numpy(),
            "payload": [alert_payload(e) for e in events.to_dict("records")],
        }
    )
    rows["timestamp"] = pd.to_datetime(rows["timestamp"], utc=True)
    writer = BulkWriter(
        conn,
        alert_outbox,
        _ENQUEUED,
        conflict=("idempotency_key",),
        constants={
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "delivered_to": "[]",
            "created_at": now,
        },
    )
    return writer.write_frame(rows)


def withdraw(conn: sa.Connection, first_id: int, last_id: int) -> None:
    """Alerts not yet delivered whose event is gone (a re-run no longer predicts it) are withdrawn."""
    event = sa.select(failure_events.c.reading_id).where(
        failure_events.c.reading_id == alert_outbox.c.reading_id
    )
    conn.execute(
        alert_outbox.update()
        .where(
            alert_outbox.c.status == PENDING,
            alert_outbox.c.reading_id.between(first_id, last_id),
            ~sa.exists(event),
        )
        .values(status=WITHDRAWN)
    )


@dataclass
class DeliveryReport:
    """What one delivery pass did."""

    delivered: int = 0
    suppressed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"{self.delivered} delivered, {self.suppressed} suppressed as duplicates, {self.failed} failed"
        return text + (f" ({'; '.join(sorted(set(self.errors)))})" if self.errors else "")


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _leader(conn: sa.Connection, row: sa.RowMapping, window: timedelta) -> int | None:
    """Another live alert of the same machine within `window` before this one (its id), or None."""
    t = alert_outbox.c
    ts = _aware(row["timestamp"])
    before = sa.or_(t.timestamp < ts, sa.and_(t.timestamp == ts, t.id < row["id"]))
    query = (
        sa.select(t.id)
        .where(
            t.machine_id == row["machine_id"],
            t.id != row["id"],
            t.status.in_((PENDING, DELIVERED)),
            t.timestamp >= ts - window,
            before,
        )
        .order_by(t.timestamp, t.id)
        .limit(1)
    )
    return conn.execute(query).scalar()


def due_ids(engine: Engine, now: datetime, limit: int) -> list[int]:
    t = alert_outbox.c
    query = (
        sa.select(t.id)
        .where(t.status == PENDING, t.next_attempt_at <= now)
        .order_by(t.timestamp, t.id)
        .limit(limit)
    )
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(query).scalars()]


def deliver_due(
    engine: Engine,
    targets: Sequence[Target],
    *,
    window: timedelta,
    timeout: float = 5.0,
    now: datetime | None = None,
    limit: int = 500,
    send: Post = post,
) -> DeliveryReport:
    """One delivery pass over at most `limit` due alerts (see the module docstring)."""
    ensure_alert_tables(engine)
    now = now or datetime.now(UTC)
    report, broken = DeliveryReport(), {}
    if not targets:
        report.errors.append(
            "no webhook configured (MFD_WEBHOOK_URLS, MFD_SLACK_WEBHOOK_URLS): alerts stay pending"
        )
        return report
    for row_id in due_ids(engine, now, limit):
        with engine.begin() as conn:
            row = (
                conn.execute(
                    sa.select(alert_outbox)
                    .where(alert_outbox.c.id == row_id, alert_outbox.c.status == PENDING)
                    .with_for_update(skip_locked=True)
                )
                .mappings()
                .first()
            )
            if row is None:  # another deliverer has it, or took it
                continue
            update = alert_outbox.update().where(alert_outbox.c.id == row_id)
            leader = _leader(conn, row, window)
            if leader is not None:
                conn.execute(update.values(status=SUPPRESSED, duplicate_of=leader))
                report.suppressed += 1
                continue
            done, errors = list(json.loads(row["delivered_to"])), []
            payload = json.loads(row["payload"])
            for target in targets:
                if target.key in done:
                    continue
                if target.key in broken:
                    errors.append(f"{broken[target.key]} (not retried in this pass)")
                    continue
                try:
                    send(target, payload, row["idempotency_key"], timeout)
                    done.append(target.key)
                except DeliveryFailed as exc:
                    broken[target.key] = str(exc)
                    errors.append(str(exc))
            if errors:
                attempts = int(row["attempts"]) + 1
                conn.execute(
                    update.values(
                        attempts=attempts,
                        next_attempt_at=now + backoff(attempts),
                        last_error="; ".join(errors)[:4000],
                        delivered_to=json.dumps(done),
                    )
                )
                report.failed += 1
                report.errors.extend(errors)
            else:
                conn.execute(
                    update.values(
                        status=DELIVERED,
                        delivered_at=now,
                        delivered_to=json.dumps(done),
                        attempts=int(row["attempts"]) + 1,
                        last_error=None,
                    )
                )
                report.delivered += 1
    return report


def drop_undeliverable(engine: Engine) -> int:
    """With no delivery target configured, pending alerts have nowhere to go: remove them, so the outbox does
    not grow without bound (334,144 rows from one large file). Their events stay in `failure_events`, where
    the console and `mfd events` read them. Returns the rows removed."""
    ensure_alert_tables(engine)
    with engine.begin() as conn:
        return int(conn.execute(alert_outbox.delete().where(alert_outbox.c.status == PENDING)).rowcount or 0)


def outbox_status(engine: Engine) -> dict[str, int]:
    """Alerts per status."""
    ensure_alert_tables(engine)
    query = sa.select(alert_outbox.c.status, sa.func.count()).group_by(alert_outbox.c.status)
    with engine.connect() as conn:
        return {status: int(n) for status, n in conn.execute(query)}
