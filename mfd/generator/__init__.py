"""Generator: a simulated fleet whose physics follow the AI4I 2020 facts (mfd/data/README.md).

In: a machine count, a start time, a seed. Out: reading frames (the `readings` layout plus failure modes),
peripheral-device frames, CSV bytes (optionally with injected defects) for `incoming/`."""

from mfd.generator.csv_encoding import to_csv_bytes
from mfd.generator.defects import FILE_DEFECTS, ROW_DEFECTS, defect_file, inject_defects
from mfd.generator.fleet import (
    GENERATED_COLUMNS,
    Fleet,
    generate_readings,
    iter_readings,
    machine_ids,
    rechunk,
)
from mfd.generator.peripheral import generate_peripheral

__all__ = [
    "FILE_DEFECTS",
    "GENERATED_COLUMNS",
    "ROW_DEFECTS",
    "Fleet",
    "defect_file",
    "generate_peripheral",
    "generate_readings",
    "inject_defects",
    "iter_readings",
    "machine_ids",
    "rechunk",
    "to_csv_bytes",
]
