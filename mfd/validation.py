"""THE reading-rule table: per column its type, physical range, nullability and allowed values, built from
the active plant profile (`mfd.profiles`: its sensors, ranges, segment values, label and failure modes).

Every check of a reading is derived from these two tables, looked up when it runs: the ingest row masks
(`mfd.ingestion.rows`), the raw_readings and training_set Great Expectations suites, the `/predict`
request model (`mfd.serving.readings`) and detection's `invalid_reasons`. Change a rule here and all of
them change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

import pandas as pd

from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, MACHINE_TYPES, PROFILE, SEGMENT_COLUMN

Kind = Literal["text", "timestamp", "category", "number", "flag"]


@dataclass(frozen=True)
class Range:
    """Inclusive physical range of a sensor value."""

    low: float
    high: float
    unit: str


@dataclass(frozen=True)
class TimestampWindow:
    """Plausible reading times: from `earliest` to `ahead` past the moment of the check (`now`, or the
    clock when None). Settings `MFD_TIMESTAMP_MIN` and `MFD_TIMESTAMP_MAX_AHEAD` (`Settings.timestamp_window`)."""

    earliest: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    ahead: timedelta = timedelta(days=1)
    now: datetime | None = None

    def pinned(self, now: datetime | None = None) -> TimestampWindow:
        """The same window with its end fixed at `now` (default: the clock), e.g. for a whole file."""
        return replace(self, now=now or self.now or datetime.now(UTC))

    def bounds(self) -> tuple[pd.Timestamp, pd.Timestamp]:
        """(earliest, latest) as UTC timestamps, both inclusive."""
        now = self.now or datetime.now(UTC)
        return _utc(self.earliest), _utc(now + self.ahead)

    def describe(self) -> str:
        low, high = self.bounds()
        return (
            f"outside [{low:%Y-%m-%d %H:%M:%S}Z, {high:%Y-%m-%d %H:%M:%S}Z] "
            f"(from {low:%Y-%m-%d %H:%M}Z to {_span(self.ahead)} ahead of the clock)"
        )


def _utc(moment: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _span(span: timedelta) -> str:
    for unit, size in (
        ("day", timedelta(days=1)),
        ("hour", timedelta(hours=1)),
        ("minute", timedelta(minutes=1)),
    ):
        if span >= size and span % size == timedelta(0):
            count = span // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{span.total_seconds():g} s"


@dataclass(frozen=True)
class Rule:
    """What one column must hold: `kind` (text, timestamp, category, number, 0/1 flag), whether it may be
    empty, and for numbers their physical `range`, for categories the `allowed` values, for timestamps
    their plausible `window`."""

    kind: Kind
    nullable: bool = False
    range: Range | None = None
    allowed: tuple[str, ...] = ()
    max_length: int | None = None
    window: TimestampWindow | None = None


def _number(low: float, high: float, unit: str) -> Rule:
    return Rule("number", range=Range(low, high, unit))


_KEY_RULES: dict[str, Rule] = {
    "machine_id": Rule("text", max_length=64),
    "timestamp": Rule("timestamp", window=TimestampWindow()),
}

# The active profile's columns (`mfd.profiles`): the segment attribute (where declared), the sensors with
# their physical ranges, the label and the failure modes (optional in incoming data).
READING_RULES: dict[str, Rule] = {
    **_KEY_RULES,
    **({SEGMENT_COLUMN: Rule("category", allowed=MACHINE_TYPES)} if PROFILE.segment_column else {}),
    **{s.name: _number(s.min, s.max, s.unit) for s in PROFILE.sensors},
    **{c: Rule("flag", nullable=True) for c in ((LABEL_COLUMN,) if PROFILE.label_column else ())},
    **{c: Rule("flag", nullable=True) for c in FAILURE_MODE_COLUMNS},
}

# Peripheral devices per machine (the profile's `peripheral`), on their own clock.
PERIPHERAL_RULES: dict[str, Rule] = {
    **_KEY_RULES,
    **{s.name: _number(s.min, s.max, s.unit) for s in PROFILE.peripheral},
}


def ranges(rules: Mapping[str, Rule]) -> dict[str, Range]:
    """The physical range of every number column."""
    return {c: r.range for c, r in rules.items() if r.range is not None}


def categories(rules: Mapping[str, Rule]) -> dict[str, tuple[str, ...]]:
    """The allowed values of every category column."""
    return {c: r.allowed for c, r in rules.items() if r.kind == "category"}


def flags(rules: Mapping[str, Rule]) -> tuple[str, ...]:
    """The 0/1 columns."""
    return tuple(c for c, r in rules.items() if r.kind == "flag")


def windows(rules: Mapping[str, Rule]) -> dict[str, TimestampWindow]:
    """The plausible window of every timestamp column."""
    return {c: r.window for c, r in rules.items() if r.window is not None}


def required(rules: Mapping[str, Rule]) -> tuple[str, ...]:
    """Columns every row must fill."""
    return tuple(c for c, r in rules.items() if not r.nullable)


def optional(rules: Mapping[str, Rule]) -> tuple[str, ...]:
    """Columns a file may leave out, and rows may leave empty."""
    return tuple(c for c, r in rules.items() if r.nullable)


# Snapshots at import, for code that needs bounds rather than checks (the generator, clipping).
SENSOR_RANGES: dict[str, Range] = ranges(READING_RULES)
PERIPHERAL_RANGES: dict[str, Range] = ranges(PERIPHERAL_RULES)
