"""The Great Expectations suite a training set must pass: label rate, nulls, physical ranges, unique keys."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from mfd.features import PHYSICS_COLUMNS
from mfd.schema import (
    KEY_COLUMNS,
    LABEL_COLUMN,
    MACHINE_TYPES,
    PERIPHERAL_RANGES,
    REQUIRED_COLUMNS,
    SENSOR_RANGES,
)

# A training set with fewer failures than this, or a label rate outside these bounds, cannot train a
# classifier worth promoting (AI4I: 339 failures, 3.39 %).
MIN_FAILURES = 10
MIN_LABEL_RATE = 0.001
MAX_LABEL_RATE = 0.5


def training_set_suite(
    min_failures: int = MIN_FAILURES,
    min_label_rate: float = MIN_LABEL_RATE,
    max_label_rate: float = MAX_LABEL_RATE,
) -> gx.ExpectationSuite:
    """Label rate within [min_label_rate, max_label_rate] and at least `min_failures` failures; no nulls
    in the keys, model inputs or label; sensors and peripheral values inside their physical ranges."""
    ranges = {**SENSOR_RANGES, **PERIPHERAL_RANGES}
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in (*REQUIRED_COLUMNS, *PHYSICS_COLUMNS)),
        gxe.ExpectColumnValuesToNotBeNull(column=LABEL_COLUMN),
        gxe.ExpectColumnValuesToBeInSet(column=LABEL_COLUMN, value_set=[0, 1]),
        gxe.ExpectColumnMeanToBeBetween(
            column=LABEL_COLUMN, min_value=min_label_rate, max_value=max_label_rate
        ),
        gxe.ExpectColumnSumToBeBetween(column=LABEL_COLUMN, min_value=min_failures),
        gxe.ExpectColumnValuesToBeInSet(column="machine_type", value_set=list(MACHINE_TYPES)),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=r.low, max_value=r.high)
            for c, r in ranges.items()
        ),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(KEY_COLUMNS)),
    ]
    return gx.ExpectationSuite(name="training_set", expectations=expectations)


def validate_training_set(
    df: pd.DataFrame,
    min_failures: int = MIN_FAILURES,
    min_label_rate: float = MIN_LABEL_RATE,
    max_label_rate: float = MAX_LABEL_RATE,
) -> tuple[bool, pd.DataFrame]:
    """Run the suite on `df`: (passed, one row per expectation with its column, success and observation)."""
    frame = df.astype({LABEL_COLUMN: "float64"}) if LABEL_COLUMN in df.columns else df
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("training_set")
        .add_dataframe_asset("frame")
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    result = batch.validate(training_set_suite(min_failures, min_label_rate, max_label_rate))
    rows = []
    for r in result.results:
        kwargs = r.expectation_config.kwargs
        rows.append(
            {
                "expectation": r.expectation_config.type,
                "column": kwargs.get("column") or ", ".join(kwargs.get("column_list") or []),
                "success": bool(r.success),
                "observed_value": str(r.result.get("observed_value", "")),
                "unexpected_rows": r.result.get("unexpected_count", ""),
                "error": _exception_message(r.exception_info),
            }
        )
    return bool(result.success), pd.DataFrame(rows)


def _exception_message(info: dict | None) -> str:
    """The first exception message in GX's exception info (flat, or nested per metric)."""
    if not info:
        return ""
    if info.get("raised_exception"):
        return str(info.get("exception_message", ""))
    return next((m for v in info.values() if isinstance(v, dict) and (m := _exception_message(v))), "")
