"""The Great Expectations suite a training set must pass: label rate, nulls, physical ranges and allowed
values (from `mfd.validation`), unique keys."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from mfd import validation
from mfd.expectations import summary_table, validate
from mfd.features import PHYSICS_COLUMNS
from mfd.schema import KEY_COLUMNS, LABEL_COLUMN
from mfd.validation import PERIPHERAL_RULES, READING_RULES

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
    ranges = {**validation.ranges(READING_RULES), **validation.ranges(PERIPHERAL_RULES)}
    expectations = [
        gxe.ExpectTableRowCountToBeBetween(min_value=1),
        *(
            gxe.ExpectColumnValuesToNotBeNull(column=c)
            for c in (*validation.required(READING_RULES), *PHYSICS_COLUMNS)
        ),
        gxe.ExpectColumnValuesToNotBeNull(column=LABEL_COLUMN),
        gxe.ExpectColumnValuesToBeInSet(column=LABEL_COLUMN, value_set=[0, 1]),
        gxe.ExpectColumnMeanToBeBetween(
            column=LABEL_COLUMN, min_value=min_label_rate, max_value=max_label_rate
        ),
        gxe.ExpectColumnSumToBeBetween(column=LABEL_COLUMN, min_value=min_failures),
        *(
            gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(v))
            for c, v in validation.categories(READING_RULES).items()
        ),
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
    """Run the suite on `df`: (passed, one row per expectation, see `mfd.expectations.validate`)."""
    # The nullable Int8 label becomes float so GX computes its mean and sum like any numeric column.
    frame = df.astype({LABEL_COLUMN: "float64"}) if LABEL_COLUMN in df.columns else df
    passed, summary = validate(frame, training_set_suite(min_failures, min_label_rate, max_label_rate))
    return passed, summary_table(summary)
