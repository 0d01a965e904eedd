"""The reading record: column names and dtypes shared by every stage, derived from the active plant profile
(`mfd.profiles.active()`; the rules per column are `mfd.validation`).

The key, segment and label columns have canonical names inside the platform (the profile maps its source
columns onto them at the edges); sensor, derived and peripheral columns are the profile's own.
"""

from __future__ import annotations

from mfd.profiles import LABEL, MACHINE, SEGMENT, TIMESTAMP, active

PROFILE = active()

MACHINE_TYPES: tuple[str, ...] = PROFILE.segments
SEGMENT_COLUMN = SEGMENT

KEY_COLUMNS: tuple[str, ...] = (MACHINE, TIMESTAMP)

SENSOR_COLUMNS: tuple[str, ...] = PROFILE.sensor_columns
LABEL_COLUMN = LABEL
# Failure modes are consequences of a failure, not readings: never model inputs (they leak the label).
FAILURE_MODE_COLUMNS: tuple[str, ...] = PROFILE.failure_modes

# The CSV/table layout of a reading, in order. The label and the modes are optional in incoming data; the
# segment is absent where the profile declares no attribute (the table fills its single value).
READING_COLUMNS: tuple[str, ...] = (
    MACHINE,
    TIMESTAMP,
    *((SEGMENT,) if PROFILE.segment_column else ()),
    *SENSOR_COLUMNS,
    *((LABEL_COLUMN,) if PROFILE.label_column else ()),
)
REQUIRED_COLUMNS: tuple[str, ...] = READING_COLUMNS[: len(READING_COLUMNS) - bool(PROFILE.label_column)]

PANDAS_DTYPES: dict[str, str] = {
    MACHINE: "string",
    SEGMENT: "string",
    **{c: "float64" for c in SENSOR_COLUMNS},
    LABEL_COLUMN: "Int8",
    **{c: "Int8" for c in FAILURE_MODE_COLUMNS},
}

# Peripheral devices per machine (the profile's `peripheral`) report on their own clock; their CSVs land
# under incoming/peripheral/ and join readings by nearest earlier timestamp.
PERIPHERAL_VALUE_COLUMNS: tuple[str, ...] = tuple(s.name for s in PROFILE.peripheral)
PERIPHERAL_COLUMNS: tuple[str, ...] = (MACHINE, TIMESTAMP, *PERIPHERAL_VALUE_COLUMNS)

# A maintenance record (CSV under incoming/maintenance/): what was found on a machine, and when; the outcome
# is a failure mode (or `failure` where the profile names none) or NO_FAULT. Records label the readings
# before them (mfd.preparation.labels).
NO_FAULT = "no_fault"
FAILURE_OUTCOMES: tuple[str, ...] = FAILURE_MODE_COLUMNS or ("failure",)
MAINTENANCE_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp", "outcome", "work_order_id")
