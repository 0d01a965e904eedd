"""The reading record: column names and dtypes shared by every stage (the rules per column are
`mfd.validation`)."""

from __future__ import annotations

MACHINE_TYPES: tuple[str, ...] = ("L", "M", "H")

KEY_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp")

SENSOR_COLUMNS: tuple[str, ...] = (
    "air_temperature_k",
    "process_temperature_k",
    "rotational_speed_rpm",
    "torque_nm",
    "tool_wear_min",
)
LABEL_COLUMN = "machine_failure"
# Failure modes are consequences of a failure, not readings: never model inputs (they leak the label).
FAILURE_MODE_COLUMNS: tuple[str, ...] = ("twf", "hdf", "pwf", "osf", "rnf")

# The CSV/table layout of a reading, in order. The label and the modes are optional in incoming data.
READING_COLUMNS: tuple[str, ...] = (
    "machine_id",
    "timestamp",
    "machine_type",
    *SENSOR_COLUMNS,
    LABEL_COLUMN,
)
REQUIRED_COLUMNS: tuple[str, ...] = READING_COLUMNS[:-1]

PANDAS_DTYPES: dict[str, str] = {
    "machine_id": "string",
    "machine_type": "string",
    **{c: "float64" for c in SENSOR_COLUMNS},
    LABEL_COLUMN: "Int8",
    **{c: "Int8" for c in FAILURE_MODE_COLUMNS},
}

# Peripheral devices per machine (a power meter and an ambient sensor) report on their own clock;
# their CSVs land under incoming/peripheral/ and join readings by nearest earlier timestamp.
PERIPHERAL_VALUE_COLUMNS: tuple[str, ...] = ("power_meter_w", "vibration_mm_s", "ambient_temperature_k")
PERIPHERAL_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp", *PERIPHERAL_VALUE_COLUMNS)

# A maintenance record (CSV under incoming/maintenance/): what was found on a machine, and when; the outcome
# is a failure mode or NO_FAULT. Records label the readings before them (mfd.preparation.labels).
NO_FAULT = "no_fault"
MAINTENANCE_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp", "outcome", "work_order_id")
