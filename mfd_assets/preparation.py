"""Preparation: the labelled training set, its IQR-cleaned twin and a cluster map of the machines."""

import dagster as dg
import pandas as pd
from pydantic import Field

from mfd.features import WINDOW_COLUMNS
from mfd.ingestion.maintenance import MAINTENANCE_PREFIX, ingest_maintenance, pending_files
from mfd.modeling.training_data import trainability_problem
from mfd.plots import png_markdown, table_markdown
from mfd.preparation.clusters import cluster_machines, cluster_scatter
from mfd.preparation.expectations import MAX_LABEL_RATE, MIN_FAILURES, MIN_LABEL_RATE, validate_training_set
from mfd.preparation.labels import (
    FROM_MAINTENANCE,
    count_censored,
    coverage_by_machine,
    coverage_by_source,
    readings_per_machine,
)
from mfd.preparation.training_set import (
    DEFAULT_LABEL_WINDOW,
    build_training_set,
    outlier_boxplot,
    read_sources,
    remove_outliers_iqr,
    rows_with_peripheral,
)
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN
from mfd_assets.metadata import rounded
from mfd_assets.metadata import table as table_metadata
from mfd_resources import ObjectStore, ReadingsStore

GROUP = "preparation"
MACHINES_SHOWN = 50  # rows of the per-machine coverage table in the metadata


class TrainingSetConfig(dg.Config):
    merge_tolerance: str = Field(
        "5min",
        description="How much older than a reading its peripheral reading may be (pandas Timedelta, "
        "e.g. '30s', '5min'); readings with none that recent get NaN peripheral columns.",
    )
    label_window: str = Field(
        DEFAULT_LABEL_WINDOW,
        description="Readings of a machine this long (pandas Timedelta) before one of its maintenance "
        "records, without a label of their own, take the record's outcome as their label.",
    )


class TrainingSetExpectationsConfig(dg.Config):
    min_failures: int = Field(MIN_FAILURES, description="Fewest failures a training set may hold.")
    min_label_rate: float = Field(MIN_LABEL_RATE, description="Lowest allowed share of failures.")
    max_label_rate: float = Field(MAX_LABEL_RATE, description="Highest allowed share of failures.")


class CleanedSetConfig(dg.Config):
    iqr_k: float = Field(1.5, description="Fence multiplier: outside q1 - k*IQR .. q3 + k*IQR is an outlier.")


class MachineClustersConfig(dg.Config):
    n_clusters: int = Field(4, description="KMeans cluster count.")
    sample_size: int = Field(1500, description="Rows in the MDS map (MDS is O(n^2)).")
    seed: int = Field(0, description="Seed of KMeans, the sample and MDS.")


@dg.asset(group_name="ingestion", deps=["readings"], kinds={"s3", "postgres"})
def maintenance_records(
    context: dg.AssetExecutionContext, readings_store: ReadingsStore, object_store: ObjectStore
) -> dg.MaterializeResult:
    """Maintenance CSV files waiting under incoming/maintenance/ checked against the rule table and stored
    in `maintenance_records`; refused records go to rejected/ with their reason, the file to processed/."""
    objects = object_store.objects()
    reports = [
        ingest_maintenance(readings_store.engine, objects, key, readings_store.timestamp_window())
        for key in pending_files(objects)
    ]
    refused: dict[str, int] = {}
    for report in reports:
        for reason, count in report.refused.items():
            refused[reason] = refused.get(reason, 0) + count
        context.log.info(
            "%s: %d stored, %d refused -> %s", report.key, report.stored, report.rows_refused, report.filed_as
        )
    files = pd.DataFrame(
        [
            {
                "file": r.key,
                "status": r.status,
                "read": r.rows_read,
                "stored": r.stored,
                "refused": r.rows_refused,
                "filed_as": r.filed_as,
            }
            for r in reports
        ]
    )
    reasons = pd.Series(refused, name="records", dtype="int64").rename_axis("reason").to_frame()
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "files": len(reports),
                "files_rejected": sum(r.status == "rejected" for r in reports),
                "records_stored": sum(r.stored for r in reports),
                "records_refused": sum(refused.values()),
                "prefix": MAINTENANCE_PREFIX,
                "by_file": dg.MetadataValue.md(table_markdown(files) if len(files) else "no files"),
                "refused_by_reason": dg.MetadataValue.md(table_markdown(reasons) if len(reasons) else "none"),
            }
        )
    )


@dg.asset(group_name=GROUP, deps=["readings", "maintenance_records"], kinds={"pandas"})
def training_set(
    context: dg.AssetExecutionContext, config: TrainingSetConfig, readings_store: ReadingsStore
) -> dg.Output[pd.DataFrame]:
    """Labelled readings (their own label, else the outcome of a maintenance record of their machine within
    label_window after them) joined per machine with the nearest earlier peripheral reading, plus physics
    features and, where the profile declares windows, machine-window features (maintenance records start a
    new life). Failure modes are kept for analysis only; models read `mfd.features.feature_matrix`."""
    sources = read_sources(readings_store.engine, config.label_window)
    labelled = sources.labelled()
    df = build_training_set(labelled, sources.peripheral, config.merge_tolerance, sources.maintenance)
    failures = int(df[LABEL_COLUMN].sum())
    with_peripheral = rows_with_peripheral(df)
    by_source = coverage_by_source(labelled)
    by_machine = coverage_by_machine(labelled, readings_per_machine(readings_store.engine))
    censored = count_censored(readings_store.engine)  # unknown future: not negatives, left out
    context.log.info(
        "training set: %d rows (%d labelled by maintenance), %d failures, %d with peripheral data, "
        "%d censored readings left out",
        len(df),
        int(by_source.loc[FROM_MAINTENANCE, "rows"]),
        failures,
        with_peripheral,
        censored,
    )
    modes = df[list(FAILURE_MODE_COLUMNS)].sum().rename("rows").to_frame().rename_axis("failure mode")
    return dg.Output(
        df,
        metadata=rounded(
            {
                "rows": len(df),
                "failures": failures,
                "label_rate": float(failures / len(df)) if len(df) else 0.0,
                "rows_with_peripheral": with_peripheral,
                "labelled_by_maintenance": int(by_source.loc[FROM_MAINTENANCE, "rows"]),
                "maintenance_records": len(sources.maintenance),
                "label_window": config.label_window,
                "candidate_readings_unlabelled": len(sources.readings) - len(labelled),
                "censored_readings": censored,
                "merge_tolerance": config.merge_tolerance,
                "label_coverage_by_source": table_metadata(by_source),
                "label_coverage_by_machine": table_metadata(by_machine.head(MACHINES_SHOWN)),
                "failure_modes": table_metadata(modes),
                "window_features": len(WINDOW_COLUMNS),
                "preview": table_metadata(df.drop(columns=list(WINDOW_COLUMNS)).head(10)),
            }
        ),
    )


# Named "expectations": its run config sits under ops.training_set_expectations.
@dg.asset_check(asset=training_set, name="expectations", blocking=True)
def training_set_expectations(
    training_set: pd.DataFrame, config: TrainingSetExpectationsConfig
) -> dg.AssetCheckResult:
    """Great Expectations: label rate and failure count, no nulls in inputs, physical ranges, unique keys."""
    passed, summary = validate_training_set(
        training_set, config.min_failures, config.min_label_rate, config.max_label_rate
    )
    failed = summary[~summary["success"]]
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=rounded(
            {
                "expectations": len(summary),
                "failed": len(failed),
                "failed_expectations": dg.MetadataValue.md(table_markdown(failed) if len(failed) else "none"),
                "results": table_metadata(summary),
            }
        ),
    )


def _trainable_check(df: pd.DataFrame) -> dg.AssetCheckResult:
    problem = trainability_problem(df)
    labels = df[LABEL_COLUMN].dropna() if LABEL_COLUMN in df.columns else pd.Series(dtype="int64")
    return dg.AssetCheckResult(
        passed=problem is None,
        severity=dg.AssetCheckSeverity.ERROR,
        description=problem or "two classes and enough failures for 5-fold CV plus a holdout",
        metadata={"labelled_rows": len(labels), "failures": int(labels.astype("int64").sum())},
    )


@dg.asset_check(asset=training_set, name="trainable", blocking=True)
def training_set_trainable(training_set: pd.DataFrame) -> dg.AssetCheckResult:
    """Both classes present and enough failures for stratified 5-fold CV plus a holdout."""
    return _trainable_check(training_set)


@dg.asset(group_name=GROUP, kinds={"pandas"})
def cleaned_set(config: CleanedSetConfig, training_set: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """The training set without non-failure rows outside the IQR fences (per feature and machine type).
    Failures are never removed."""
    cleaned, report = remove_outliers_iqr(training_set, config.iqr_k)
    return dg.Output(
        cleaned,
        metadata=rounded(
            {
                "rows_before": report.rows_before,
                "rows_after": report.rows_after,
                "rows_removed": report.rows_removed,
                "failures_kept": report.failures_kept,
                "naive_iqr_failures_dropped": dg.MetadataValue.int(report.naive_failures_dropped),
                "iqr_k": config.iqr_k,
                "removed_by_feature": table_metadata(report.by_feature),
                "fences": table_metadata(report.bounds),
                "before_after": dg.MetadataValue.md(
                    png_markdown(outlier_boxplot(training_set, cleaned), "feature distributions before/after")
                ),
            }
        ),
    )


@dg.asset_check(asset=cleaned_set, name="trainable", blocking=True)
def cleaned_set_trainable(cleaned_set: pd.DataFrame) -> dg.AssetCheckResult:
    """Both classes present and enough failures for stratified 5-fold CV plus a holdout."""
    return _trainable_check(cleaned_set)


@dg.asset(group_name=GROUP, kinds={"sklearn"})
def machine_clusters(config: MachineClustersConfig, cleaned_set: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """KMeans clusters of the cleaned readings with their failure rates, and an MDS map of a sample."""
    clusters = cluster_machines(cleaned_set, config.n_clusters, config.sample_size, config.seed)
    keys = [c for c in ("id", "machine_id", "timestamp") if c in cleaned_set.columns]
    assignments = cleaned_set[keys].assign(cluster=clusters.labels)
    return dg.Output(
        assignments,
        metadata={
            "clusters": table_metadata(clusters.table),
            "method": clusters.method,
            "map": dg.MetadataValue.md(png_markdown(cluster_scatter(clusters), "MDS map by cluster")),
        },
    )
