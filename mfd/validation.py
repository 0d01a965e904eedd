"""THE reading-rule table: per column its type, physical range, nullability and allowed values.

Every check of a reading is derived from these two tables, looked up when it runs: the ingest row masks
(`mfd.ingestion.rows`), the raw_readings and training_set Great Expectations suites, the `/predict`
request model (`mfd.serving.readings`) and detection's `invalid_reasons`. Change a rule here and all of
them change.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, MACHINE_TYPES

Kind = Literal["text", "timestamp", "category", "number", "flag"]


@dataclass(frozen=True)
class Range:
    """Inclusive physical range of a sensor value."""

    low: float
    high: float
    unit: str


@dataclass(frozen=True)
class Rule:
    """What one column must hold: `kind` (text, timestamp, category, number, 0/1 flag), whether it may be
    empty, and for numbers their physical `range`, for categories the `allowed` values."""

    kind: Kind
    nullable: bool = False
    range: Range | None = None
    allowed: tuple[str, ...] = ()
    max_length: int | None = None


def _number(low: float, high: float, unit: str) -> Rule:
    return Rule("number", range=Range(low, high, unit))


_KEY_RULES: dict[str, Rule] = {
    "machine_id": Rule("text", max_length=64),
    "timestamp": Rule("timestamp"),
}

# Physical limits a real sensor can report; AI4I itself spans a narrower band
# (air 295-305 K, speed 1168-2886 rpm, torque 3.8-76.6 Nm, wear 0-253 min).
READING_RULES: dict[str, Rule] = {
    **_KEY_RULES,
    "machine_type": Rule("category", allowed=MACHINE_TYPES),
    "air_temperature_k": _number(250.0, 350.0, "K"),
    "process_temperature_k": _number(250.0, 370.0, "K"),
    "rotational_speed_rpm": _number(0.0, 6000.0, "rpm"),
    "torque_nm": _number(0.0, 200.0, "Nm"),
    "tool_wear_min": _number(0.0, 500.0, "min"),
    # The label and the failure modes are optional in incoming data.
    **{c: Rule("flag", nullable=True) for c in (LABEL_COLUMN, *FAILURE_MODE_COLUMNS)},
}

# Peripheral devices per machine (a power meter and an ambient sensor), on their own clock.
PERIPHERAL_RULES: dict[str, Rule] = {
    **_KEY_RULES,
    "power_meter_w": _number(0.0, 50000.0, "W"),
    "vibration_mm_s": _number(0.0, 100.0, "mm/s"),
    "ambient_temperature_k": _number(250.0, 350.0, "K"),
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


def required(rules: Mapping[str, Rule]) -> tuple[str, ...]:
    """Columns every row must fill."""
    return tuple(c for c, r in rules.items() if not r.nullable)


def optional(rules: Mapping[str, Rule]) -> tuple[str, ...]:
    """Columns a file may leave out, and rows may leave empty."""
    return tuple(c for c, r in rules.items() if r.nullable)


# Snapshots at import, for code that needs bounds rather than checks (the generator, clipping).
SENSOR_RANGES: dict[str, Range] = ranges(READING_RULES)
PERIPHERAL_RANGES: dict[str, Range] = ranges(PERIPHERAL_RULES)
