"""Generator: simulated fleets, one per profile generator. `ai4i`: physics that follow the AI4I 2020 facts
(mfd/data/README.md; `fleet`, `peripheral`); `generic`: any profile's sensors drifting toward failure
(`generic`). `runs.readings_of` picks one by the profile.

In: a machine count, a start time, a seed. Out: reading frames (the `readings` layout plus failure modes),
maintenance records, peripheral-device frames, CSV bytes (optionally with injected defects) for
`incoming/`."""

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
from mfd.generator.generic import Generated, GenericFleet, generate_generic, readings_csv
from mfd.generator.peripheral import generate_peripheral

__all__ = [
    "FILE_DEFECTS",
    "GENERATED_COLUMNS",
    "Generated",
    "GenericFleet",
    "ROW_DEFECTS",
    "Fleet",
    "defect_file",
    "generate_generic",
    "generate_peripheral",
    "generate_readings",
    "inject_defects",
    "iter_readings",
    "machine_ids",
    "readings_csv",
    "rechunk",
    "to_csv_bytes",
]
