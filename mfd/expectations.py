"""Great Expectations 1.x, used directly: run a suite on a DataFrame and summarise the result.

Shared by the stages' suites (`mfd.ingestion.expectations`, `mfd.preparation.expectations`); GX is
imported when a suite runs, since it takes seconds to import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    import great_expectations as gx


def validate(df: pd.DataFrame, suite: gx.ExpectationSuite) -> tuple[bool, dict[str, Any]]:
    """Run `suite` on `df` in an ephemeral GX context: (passed, summary).

    The summary has the suite name, row count, GX statistics and one entry per expectation (type,
    column, success, observed value, unexpected count and percent, a few unexpected values).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

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
