"""The two kinds of incoming file (readings, peripheral-device readings): their rules, their table, and
where a file of each kind lives in the bucket."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa

from mfd import validation
from mfd.storage.objects import PERIPHERAL_PREFIX
from mfd.storage.tables import peripheral_readings, readings
from mfd.validation import PERIPHERAL_RULES, READING_RULES, Range, Rule, TimestampWindow


@dataclass(frozen=True)
class Layout:
    """What one kind of incoming file must look like (its rules in `mfd.validation`, read when a file is
    checked), and the table its rows go to."""

    kind: str
    table: sa.Table
    rules: Mapping[str, Rule]

    @property
    def required(self) -> tuple[str, ...]:
        return validation.required(self.rules)

    @property
    def optional(self) -> tuple[str, ...]:
        return validation.optional(self.rules)

    @property
    def columns(self) -> tuple[str, ...]:
        return (*self.required, *self.optional)

    @property
    def ranges(self) -> dict[str, Range]:
        return validation.ranges(self.rules)

    @property
    def categories(self) -> dict[str, tuple[str, ...]]:
        return validation.categories(self.rules)

    @property
    def flags(self) -> tuple[str, ...]:
        return validation.flags(self.rules)

    @property
    def windows(self) -> dict[str, TimestampWindow]:
        return validation.windows(self.rules)

    def pinned(self, window: TimestampWindow | None = None, now: datetime | None = None) -> Layout:
        """This layout for one file: its timestamps checked against `window` (the configured one; default
        the rule table's) with the end fixed at `now` (default: the clock), the same for every block."""
        rules = dict(self.rules)
        for column, own in validation.windows(rules).items():
            rules[column] = replace(rules[column], window=(window or own).pinned(now))
        return replace(self, rules=rules)


READINGS = Layout(kind="readings", table=readings, rules=READING_RULES)
PERIPHERAL = Layout(kind="peripheral", table=peripheral_readings, rules=PERIPHERAL_RULES)


def layout_for(key: str) -> Layout:
    """Peripheral-device files live under `incoming/peripheral/`; every other file holds readings."""
    return PERIPHERAL if key.startswith(PERIPHERAL_PREFIX) else READINGS
