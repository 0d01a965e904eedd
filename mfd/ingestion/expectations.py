"""Great Expectations 1.x, used directly: run a suite on a DataFrame and summarise the result.

`validate(df, suite)` is the generic helper every stage uses; `loaded_rows_suite` is the suite the rows
loaded from one incoming file must pass (schema, nulls, physical ranges, unique keys, time order).
"""

from __future__ import annotations

from typing import Any

import great_expectations as gx
import great_expectations.expectations as gxe
import pandas as pd
from great_expectations.data_context.types.base import ProgressBarsConfig

from mfd.ingestion.load import Layout

STEP_COLUMN = "seconds_since_previous"


def validate(df: pd.DataFrame, suite: gx.ExpectationSuite) -> tuple[bool, dict[str, Any]]:
    """Run `suite` on `df` in an ephemeral GX context: (passed, summary).

    The summary has the suite name, row count, GX statistics and one entry per expectation (type,
    column, success, observed value, unexpected count and percent, a few unexpected values).
    """
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas(suite.name)
        .add_dataframe_asset(suite.name)
        .add_batch_definition_whole_dataframe(suite.name)
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite.name, data=batch, suite=context.suites.add(suite))
    )
    result = definition.run(batch_parameters={"dataframe": df}, result_format="SUMMARY")
    expectations = []
    for r in result.results:
        kwargs = r.expectation_config.kwargs
        expectations.append(
            {
                "expectation": r.expectation_config.type,
                "column": kwargs.get("column") or ", ".join(kwargs.get("column_list") or []),
                "success": bool(r.success),
                "observed": _short(r.result.get("observed_value", "")),
                "unexpected_count": r.result.get("unexpected_count", 0) or 0,
                "unexpected_percent": round(float(r.result.get("unexpected_percent") or 0.0), 3),
                "examples": _short(r.result.get("partial_unexpected_list", [])[:3]),
                "error": _exception_message(r.exception_info),
            }
        )
    summary = {
        "suite": suite.name,
        "rows": len(df),
        "success": bool(result.success),
        **{k: result.statistics[k] for k in ("evaluated_expectations", "successful_expectations")},
        "expectations": expectations,
    }
    return bool(result.success), summary


def summary_table(summary: dict[str, Any]) -> pd.DataFrame:
    """One row per expectation, for a markdown table in Dagster metadata."""
    return pd.DataFrame(summary["expectations"])


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
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["machine_id", "timestamp"]),
        # Timestamps increase per machine in file order: the step to the previous reading is positive.
        gxe.ExpectColumnValuesToBeBetween(column=STEP_COLUMN, min_value=0, strict_min=True),
    ]
    return gx.ExpectationSuite(name=name, expectations=expectations)


def with_time_steps(rows: pd.DataFrame) -> pd.DataFrame:
    """`rows` (in file order) plus the seconds since the same machine's previous row (null for its first)."""
    out = rows.copy()
    out[STEP_COLUMN] = out.groupby("machine_id")["timestamp"].diff().dt.total_seconds()
    return out


def _short(value: Any, limit: int = 200) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _exception_message(info: dict | None) -> str:
    """The first exception message in GX's exception info (flat, or nested per metric)."""
    if not info:
        return ""
    if info.get("raised_exception"):
        return str(info.get("exception_message", ""))
    return next((m for v in info.values() if isinstance(v, dict) and (m := _exception_message(v))), "")
