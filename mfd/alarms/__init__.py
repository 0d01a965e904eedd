"""Alarms with a lifecycle: a machine's risk past its threshold for k consecutive readings opens one alarm
per machine and kind (`opening`); later crossings bump it. People acknowledge, snooze and resolve it; an
open alarm left unacknowledged escalates once through the alert outbox; a resolution becomes a maintenance
record, so labels flow into retraining (`lifecycle`). Every change is recorded in `alarm_transitions`."""

from mfd.alarms.lifecycle import acknowledge, escalate_due, resolve, snooze, wake_snoozed
from mfd.alarms.model import (
    ACKNOWLEDGED,
    OPEN,
    OUTCOMES,
    RESOLVED,
    SNOOZED,
    AlarmConflict,
    AlarmNotFound,
    AlarmUpdate,
    InvalidAction,
)
from mfd.alarms.opening import read_scored, update_alarms

__all__ = [
    "ACKNOWLEDGED",
    "OPEN",
    "OUTCOMES",
    "RESOLVED",
    "SNOOZED",
    "AlarmConflict",
    "AlarmNotFound",
    "AlarmUpdate",
    "InvalidAction",
    "acknowledge",
    "escalate_due",
    "read_scored",
    "resolve",
    "snooze",
    "update_alarms",
    "wake_snoozed",
]
