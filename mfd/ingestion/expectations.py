"""The Great Expectations suite the rows loaded from one incoming file must pass (schema, nulls, physical
ranges, unique keys, time order), built from the file's rules in `mfd.validation`; run it with
`mfd.expectations.validate`."""

from __future__ import annotations

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd

from mfd.ingestion.layouts import Layout
from mfd.schema import KEY_COLUMNS

STEP_COLUMN = "seconds_since_previous"


def loaded_rows_suite(layout: Layout, name: str = "loaded_rows") -> gx.ExpectationSuite:
    """What rows loaded from one file must satisfy; run it on `with_time_steps(rows)`."""
    columns = [*layout.required, *layout.optional]
    expectations: list[gxe.Expectation] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=[*columns, STEP_COLUMN], exact_match=False),
        *(gxe.ExpectColumnValuesToNotBeNull(column=c) for c in layout.required),
        *(
            gxe.ExpectColumnValuesToBeBetween(column=c, min_value=r.low, max_value=r.high)
            for c, r in layout.ranges.items()
        ),
        *(gxe.ExpectColumnValuesToBeInSet(column=c, value_set=list(v)) for c, v in layout.categories.items()),
        *(gxe.ExpectColumnValuesToBeInSet(column=c, value_set=[0, 1]) for c in layout.flags),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=list(KEY_COLUMNS)),
        # Timestamps increase per machine in file order: the step to the previous reading is positive.
        gxe.ExpectColumnValuesToBeBetween(column=STEP_COLUMN, min_value=0, strict_min=True),
    ]
    return gx.ExpectationSuite(name=name, expectations=expectations)


def with_time_steps(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (in file order) plus the seconds since the same machine's previous row (null for its first)."""
    out = rows.copy()
    out[STEP_COLUMN] = out.groupby("machine_id")["timestamp"].diff().dt.total_seconds()
    return out
