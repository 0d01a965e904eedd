"""The alert outbox: one row per failure *episode* of a machine, written in the transaction that writes the
events (so an event never exists without its episode's alert), and delivered to the webhooks at least once
by `deliver_due`, outside detection.

Episodes: a machine's failure events less than EPISODE_GAP apart are one episode, one outbox row and one
message, carrying the episode's count, first and last seen, and peak probability (`episode` in the payload).
Events of a later batch join the machine's latest episode when they lie within EPISODE_GAP of it: a pending
row's message grows before it is sent; a delivered row's record keeps counting, and nothing is sent again.
A re-run of a batch folds nothing twice (events at or below the episode's highest reading id, inside its
time span, are counted already). One 2.85M-row file had made 334,144 rows, one per flagged reading.

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

import numpy as np
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
NO_TARGET = "no webhook configured (MFD_WEBHOOK_URLS or MFD_SLACK_WEBHOOK_URLS)"
# A machine's events closer than this are one episode (the default dedup window, MFD_ALERT_DEDUP_WINDOW_S).
EPISODE_GAP = timedelta(minutes=15)

Post = Callable[[Target, dict[str, Any], str, float], None]


KEY_PREFIX = "mfd-failure-event-"


def idempotency_key(reading_id: int) -> str:
    """The key of an episode's alert: its first event's (per reading), so a re-run, or another model flagging
    it again, is no new alert."""
    return f"{KEY_PREFIX}{int(reading_id)}"


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


def _utc(value: Any) -> pd.Timestamp:
    """A stored time as an aware UTC timestamp (a naive one is UTC)."""
    ts = pd.Timestamp(value)
    return ts.tz_localize(UTC) if ts.tzinfo is None else ts.tz_convert(UTC)


@dataclass
class Episode:
    """A machine's run of failure events: what its outbox row says (`episode` in the payload)."""

    first_seen: pd.Timestamp
    last_seen: pd.Timestamp
    count: int
    peak_probability: float
    peak_reading_id: int
    last_reading_id: int  # the highest reading id folded in (a re-run folds nothing twice)

    @classmethod
    def of(cls, events: pd.DataFrame) -> Episode:
        """The episode of `events` (one machine, non-empty)."""
        peak = events.iloc[int(np.argmax(events["probability"].to_numpy()))]  # by position: any index
        return cls(
            events["timestamp"].min(),
            events["timestamp"].max(),
            len(events),
            float(peak["probability"]),
            int(peak["reading_id"]),
            int(events["reading_id"].max()),
        )

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Episode:
        """From a stored alert; an alert written before episodes is an episode of its one event."""
        ep = payload.get("episode") or {
            "first_seen": payload["timestamp"],
            "last_seen": payload["timestamp"],
            "count": 1,
            "peak_probability": payload["probability"],
            "peak_reading_id": payload["reading_id"],
            "last_reading_id": payload["reading_id"],
        }
        return cls(
            _utc(ep["first_seen"]),
            _utc(ep["last_seen"]),
            int(ep["count"]),
            float(ep["peak_probability"]),
            int(ep["peak_reading_id"]),
            int(ep["last_reading_id"]),
        )

    def near(self, events: pd.DataFrame) -> bool:
        """Whether `events` (one machine) lie within EPISODE_GAP of this episode."""
        ts = events["timestamp"]
        return ts.min() <= self.last_seen + EPISODE_GAP and ts.max() >= self.first_seen - EPISODE_GAP

    def fold(self, events: pd.DataFrame) -> Episode:
        """This episode with the events not counted yet (above its last reading id, or outside its span)."""
        ts = events["timestamp"]
        new = events[
            (events["reading_id"] > self.last_reading_id) | (ts < self.first_seen) | (ts > self.last_seen)
        ]
        if new.empty:
            return self
        more = Episode.of(new)
        peak = more if more.peak_probability > self.peak_probability else self
        return Episode(
            min(self.first_seen, more.first_seen),
            max(self.last_seen, more.last_seen),
            self.count + more.count,
            peak.peak_probability,
            peak.peak_reading_id,
            max(self.last_reading_id, more.last_reading_id),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "first_seen": self.first_seen.isoformat(),
            "last_seen": self.last_seen.isoformat(),
            "peak_probability": round(self.peak_probability, 6),
            "peak_reading_id": self.peak_reading_id,
            "last_reading_id": self.last_reading_id,
        }


def split_episodes(events: pd.DataFrame) -> list[pd.DataFrame]:
    """One machine's events in time order, cut where two lie more than EPISODE_GAP apart."""
    ordered = events.sort_values(["timestamp", "reading_id"])
    stamps = ordered["timestamp"]
    if stamps.iat[-1] - stamps.iat[0] <= EPISODE_GAP:  # the usual batch: one episode, no groupby (~ms each)
        return [ordered]
    cuts = (stamps.diff() > EPISODE_GAP).cumsum().to_numpy()
    return [part for _, part in ordered.groupby(cuts, sort=True)]


def _latest_episodes(conn: sa.Connection, machines: list[str]) -> dict[str, sa.RowMapping]:
    """The latest failure alert (not withdrawn) of each machine: its open episode, if it is near."""
    t = alert_outbox.c
    latest: dict[str, sa.RowMapping] = {}
    for at in range(0, len(machines), 500):
        rank = sa.func.row_number().over(
            partition_by=t.machine_id, order_by=(t.timestamp.desc(), t.id.desc())
        )
        inner = (
            sa.select(t.id, t.machine_id, t.payload, rank.label("rank"))
            .where(
                t.machine_id.in_(machines[at : at + 500]),
                t.idempotency_key.like(f"{KEY_PREFIX}%"),
                t.status != WITHDRAWN,
            )
            .subquery()
        )
        for row in conn.execute(sa.select(inner).where(inner.c.rank == 1)).mappings():
            latest[row["machine_id"]] = row
    return latest


def enqueue(conn: sa.Connection, events: pd.DataFrame, now: datetime) -> int:
    """Add the alerts of `events` (columns of `alert_payload`) on `conn`'s transaction, one per episode of a
    machine (module docstring): events near a machine's latest episode update its row; the others start
    new episodes, keyed by their first event (a re-run adds nothing). Returns the rows added."""
    if events.empty:
        return 0
    events = events.assign(timestamp=pd.to_datetime(events["timestamp"], utc=True))
    events["machine_id"] = events["machine_id"].astype(str)
    latest = _latest_episodes(conn, sorted(events["machine_id"].unique()))
    new: list[dict[str, Any]] = []
    for machine, group in events.groupby("machine_id", sort=True):
        row = latest.get(machine)
        for part in split_episodes(group):
            open_ = Episode.from_payload(json.loads(row["payload"])) if row is not None else None
            if open_ is not None and open_.near(part):
                grown = open_.fold(part)
                if grown != open_:
                    payload = {**json.loads(row["payload"]), "episode": grown.as_json()}
                    conn.execute(
                        alert_outbox.update()
                        .where(alert_outbox.c.id == row["id"])
                        .values(payload=json.dumps(payload))
                    )
                    row = {**row, "payload": json.dumps(payload)}
                continue
            first = part.iloc[0].to_dict()
            payload = json.dumps({**json.loads(alert_payload(first)), "episode": Episode.of(part).as_json()})
            new.append({**first, "payload": payload})
            row = None  # a later part of this batch is past this one's gap: a new episode too
    return _insert(conn, pd.DataFrame(new), now) if new else 0


def _insert(conn: sa.Connection, first_events: pd.DataFrame, now: datetime) -> int:
    """The rows of new episodes (each its first event's key, reading and time)."""
    rows = pd.DataFrame(
        {
            "idempotency_key": [idempotency_key(i) for i in first_events["reading_id"]],
            "reading_id": first_events["reading_id"].astype("int64").to_numpy(),
            "machine_id": first_events["machine_id"].astype(str).to_numpy(),
            "timestamp": pd.to_datetime(first_events["timestamp"], utc=True),
            "payload": first_events["payload"].to_numpy(),
        }
    )
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
    """Alerts not yet delivered whose episode lost its events (a re-run no longer predicts them) are
    withdrawn: no event of the machine is left in the batch's range from the episode's start on."""
    t, e = alert_outbox.c, failure_events.c
    left = sa.select(e.reading_id).where(
        e.machine_id == t.machine_id, e.reading_id.between(first_id, last_id), e.timestamp >= t.timestamp
    )
    conn.execute(
        alert_outbox.update()
        .where(t.status == PENDING, t.reading_id.between(first_id, last_id), ~sa.exists(left))
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
        dropped = drop_undeliverable(engine)
        report.errors.append(
            f"{NO_TARGET}: {dropped} pending alert(s) dropped, alerts are not kept in the outbox"
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
