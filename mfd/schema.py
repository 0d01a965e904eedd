"""The reading record: column names, dtypes and physical ranges shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass

MACHINE_TYPES: tuple[str, ...] = ("L", "M", "H")

KEY_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp")


@dataclass(frozen=True)
class Range:
    """Inclusive physical range of a sensor value."""

    low: float
    high: float
    unit: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


# Physical limits a real sensor can report; AI4I itself spans a narrower band
# (air 295-305 K, speed 1168-2886 rpm, torque 3.8-76.6 Nm, wear 0-253 min).
SENSOR_RANGES: dict[str, Range] = {
    "air_temperature_k": Range(250.0, 350.0, "K"),
    "process_temperature_k": Range(250.0, 370.0, "K"),
    "rotational_speed_rpm": Range(0.0, 6000.0, "rpm"),
    "torque_nm": Range(0.0, 200.0, "Nm"),
    "tool_wear_min": Range(0.0, 500.0, "min"),
}

SENSOR_COLUMNS: tuple[str, ...] = tuple(SENSOR_RANGES)
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
OPTIONAL_COLUMNS: tuple[str, ...] = (LABEL_COLUMN, *FAILURE_MODE_COLUMNS)

PANDAS_DTYPES: dict[str, str] = {
    "machine_id": "string",
    "machine_type": "string",
    **{c: "float64" for c in SENSOR_COLUMNS},
    LABEL_COLUMN: "Int8",
    **{c: "Int8" for c in FAILURE_MODE_COLUMNS},
}

# Peripheral devices per machine (a power meter and an ambient sensor) report on their own clock;
# their CSVs land under incoming/peripheral/ and join readings by nearest earlier timestamp.
PERIPHERAL_RANGES: dict[str, Range] = {
    "power_meter_w": Range(0.0, 50000.0, "W"),
    "vibration_mm_s": Range(0.0, 100.0, "mm/s"),
    "ambient_temperature_k": Range(250.0, 350.0, "K"),
}
PERIPHERAL_COLUMNS: tuple[str, ...] = ("machine_id", "timestamp", *PERIPHERAL_RANGES)
