"""The one reading-rule table: change one range there and every check of a reading changes with it."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from pydantic import TypeAdapter, ValidationError

from mfd import validation
from mfd.detection.batches import invalid_reasons
from mfd.expectations import validate
from mfd.ingestion.expectations import loaded_rows_suite, with_time_steps
from mfd.ingestion.layouts import PERIPHERAL, READINGS
from mfd.ingestion.parsing import parse
from mfd.ingestion.rows import row_problems
from mfd.preparation.expectations import training_set_suite
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import (
    FAILURE_MODE_COLUMNS,
    LABEL_COLUMN,
    PERIPHERAL_COLUMNS,
    PERIPHERAL_VALUE_COLUMNS,
    REQUIRED_COLUMNS,
    SENSOR_COLUMNS,
)
from mfd.serving.readings import Reading, reading_type
from mfd.validation import PERIPHERAL_RULES, READING_RULES, Range

TORQUE = 60.0  # inside the real 0-200 Nm, outside the patched 0-50 Nm
PATCHED = "torque_nm: outside [0, 50] Nm"


def test_the_table_matches_the_schema_columns() -> None:
    assert tuple(validation.ranges(READING_RULES)) == SENSOR_COLUMNS
    assert tuple(validation.ranges(PERIPHERAL_RULES)) == PERIPHERAL_VALUE_COLUMNS
    assert validation.required(READING_RULES) == REQUIRED_COLUMNS
    assert validation.optional(READING_RULES) == (LABEL_COLUMN, *FAILURE_MODE_COLUMNS)
    assert validation.required(PERIPHERAL_RULES) == PERIPHERAL_COLUMNS
    assert READINGS.columns == (*REQUIRED_COLUMNS, LABEL_COLUMN, *FAILURE_MODE_COLUMNS)
    assert PERIPHERAL.columns == PERIPHERAL_COLUMNS


def _readings() -> pd.DataFrame:
    rows = load_ai4i().head(20).copy()
    rows["torque_nm"] = TORQUE
    return rows


def _ingest_problems(rows: pd.DataFrame) -> dict[str, np.ndarray]:
    columns = list(READINGS.columns)
    block = rows[columns].to_csv(index=False, header=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return row_problems(parse(block, columns, READINGS), READINGS)


def _range_of(suite: object, column: str) -> tuple[float, float]:
    (found,) = [
        e
        for e in suite.expectations  # type: ignore[attr-defined]
        if type(e).__name__ == "ExpectColumnValuesToBeBetween" and e.column == column
    ]
    return found.min_value, found.max_value


def test_one_range_changed_in_the_table_changes_all_five_checks(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _readings()
    reading = {c: float(rows[c].iloc[0]) for c in SENSOR_COLUMNS} | {"machine_type": "L"}
    served_now = TypeAdapter(list[Reading])  # type: ignore[valid-type]
    # With the real table the readings are valid everywhere.
    assert _ingest_problems(rows) == {}
    assert validate(with_time_steps(rows), loaded_rows_suite(READINGS))[0]
    assert _range_of(training_set_suite(), "torque_nm") == (0.0, 200.0)
    assert served_now.validate_python([reading])
    assert invalid_reasons(rows).isna().all()

    narrow = replace(READING_RULES["torque_nm"], range=Range(0.0, 50.0, "Nm"))
    monkeypatch.setitem(READING_RULES, "torque_nm", narrow)

    # 1. the ingest row masks
    problems = _ingest_problems(rows)
    assert list(problems) == [PATCHED] and problems[PATCHED].all()
    # 2. the raw_readings suite
    assert _range_of(loaded_rows_suite(READINGS), "torque_nm") == (0.0, 50.0)
    passed, summary = validate(with_time_steps(rows), loaded_rows_suite(READINGS))
    failed = [e for e in summary["expectations"] if not e["success"]]
    assert not passed and [e["column"] for e in failed] == ["torque_nm"]
    # 3. the training_set suite
    assert _range_of(training_set_suite(), "torque_nm") == (0.0, 50.0)
    # 4. the /predict request model, rebuilt from the table
    with pytest.raises(ValidationError, match="less than or equal to 50"):
        TypeAdapter(list[reading_type()]).validate_python([reading])  # type: ignore[misc]
    # 5. detection's invalid reasons
    assert (invalid_reasons(rows) == "torque_nm out of range").all()
