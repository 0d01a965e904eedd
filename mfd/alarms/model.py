"""Alarm states, outcomes, severities and the errors an action on an alarm can meet."""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.errors import MfdError
from mfd.schema import PROFILE
from mfd.storage.tables import alarm_transitions, ensure_alarm_tables, ensure_alert_tables

_READY: weakref.WeakSet[Engine] = weakref.WeakSet()

OPEN, ACKNOWLEDGED, SNOOZED, RESOLVED = "open", "acknowledged", "snoozed", "resolved"
ACTIVE: tuple[str, ...] = (OPEN, ACKNOWLEDGED, SNOOZED)
RISK = "risk"  # the kind of an alarm opened by the model's risk (others may come: rules, drift, silence)
FAILURE_CONFIRMED, NO_FAULT_FOUND, MAINTENANCE_DONE = (
    "failure_confirmed",
    "no_fault_found",
    "maintenance_done",
)
OUTCOMES: tuple[str, ...] = (FAILURE_CONFIRMED, NO_FAULT_FOUND, MAINTENANCE_DONE)
SEVERITY_NAMES: dict[int, str] = {3: "critical", 2: "high", 1: "warning"}
# Consecutive readings past the threshold that open an alarm: the profile's early-warning `debounce`, as
# the model card and the early-warning figures count alarms.
DEFAULT_DEBOUNCE = PROFILE.debounce
SYSTEM = "mfd"  # the actor of transitions nobody clicked


@dataclass
class AlarmUpdate:
    """What one `update_alarms` call did."""

    readings: int = 0
    skipped: int = 0  # already taken (a re-run)
    crossings: int = 0
    opened: int = 0
    bumped: int = 0
    machines: int = 0


def ensure_tables(engine: Engine) -> None:
    """The alarm tables (and the outbox, for escalations), created once per engine in this process: an
    action pays no catalogue queries."""
    if engine not in _READY:
        ensure_alarm_tables(engine)
        ensure_alert_tables(engine)
        _READY.add(engine)


def severity(peak_risk: float) -> int:
    """3 critical (peak risk >= 0.9), 2 high (>= 0.7), 1 warning."""
    return 3 if peak_risk >= 0.9 else 2 if peak_risk >= 0.7 else 1


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes: they are UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def open_key(machine_id: str, kind: str) -> str:
    return f"{machine_id}:{kind}"


class AlarmNotFound(MfdError):
    """No alarm has this id."""


class AlarmConflict(MfdError):
    """The alarm is no longer in a state the action applies to (someone else acted meanwhile)."""

    def __init__(self, alarm_id: int, state: str, action: str) -> None:
        super().__init__(f"alarm {alarm_id} is {state}: cannot {action} it")
        self.alarm_id, self.state, self.action = alarm_id, state, action


class InvalidAction(MfdError):
    """An action's input is wrong: `field` names it."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field, self.reason = field, reason


def record(
    conn: sa.Connection,
    alarm_id: int,
    action: str,
    before: str | None,
    after: str,
    actor: str,
    at: datetime,
    detail: dict[str, Any] | None = None,
) -> None:
    """One row of the audit trail."""
    conn.execute(
        alarm_transitions.insert().values(
            alarm_id=alarm_id,
            action=action,
            from_state=before,
            to_state=after,
            actor=actor,
            at=at,
            detail=json.dumps(detail, default=str) if detail else None,
        )
    )
