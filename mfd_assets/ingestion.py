"""Ingestion: CSV files from the object store's `incoming/` into the readings database.

`raw_readings` and `peripheral_readings` have one dynamic partition per incoming object key (added by
`incoming_files_sensor`); `readings` is the table itself, also written directly by the generator.
The computation is `mfd.ingestion.load`; the Great Expectations suites are `mfd.ingestion.expectations`.
"""

import json

import dagster as dg
import pandas as pd

from mfd.ingestion import load as ingest
from mfd.ingestion.incoming import object_key
from mfd.ingestion.layouts import PERIPHERAL, READINGS
from mfd.storage import readings as store
from mfd.storage.objects import PERIPHERAL_PREFIX, ObjectChanged, ObjectMissing
from mfd_assets.metadata import rounded, table
from mfd_resources import ObjectStore, ReadingsStore

GROUP = "ingestion"
CHECK_MAX_ROWS = 200_000  # rows of a file the expectations read back (the first ones, in load order)

incoming_files = dg.DynamicPartitionsDefinition(name="incoming_files")
peripheral_files = dg.DynamicPartitionsDefinition(name="peripheral_files")

RETRY = dg.RetryPolicy(max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL)


def _ingest(
    context: dg.AssetExecutionContext, readings_store: ReadingsStore, object_store: ObjectStore, kind: str
) -> dg.MaterializeResult:
    key = object_key(context.partition_key)
    if ingest.layout_for(key).kind != kind:
        asset = "peripheral_readings" if kind == "readings" else "raw_readings"
        raise dg.Failure(
            description=f"{key} holds {ingest.layout_for(key).kind} rows: materialize it as a partition of "
            f"{asset} (files under {PERIPHERAL_PREFIX} are peripheral, all others readings)",
            allow_retries=False,
        )
    try:
        report = ingest.ingest_object(
            object_store.objects(),
            readings_store.engine,
            key,
            window=readings_store.timestamp_window(),
            conflict_policy=readings_store.conflict_policy,
            max_bytes=readings_store.max_file_bytes,
        )
    except ObjectMissing as exc:  # retrying cannot bring the file back
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except ObjectChanged as exc:  # still being written: nothing kept; the retry policy reads it again
        raise dg.Failure(description=str(exc), allow_retries=True) from exc
    log = context.log.warning if report.status == "rejected" or report.rejected else context.log.info
    log(
        "%s: %s, read %d = loaded %d + duplicate %d + conflicting %d + rejected %d, filed as %s",
        key,
        report.status,
        report.read,
        report.loaded,
        report.duplicate,
        report.conflicting,
        report.rejected,
        report.filed_as,
    )
    return dg.MaterializeResult(metadata=report_metadata(report))


def report_metadata(report: ingest.IngestReport) -> dict[str, object]:
    """What a person wants to see about one file's load."""
    metadata: dict[str, object] = {
        "status": report.status,
        "rows_read": report.read,
        "rows_loaded": report.loaded,
        "rows_duplicate": report.duplicate,
        "rows_conflicting": report.conflicting,
        "rows_rejected": report.rejected,
        "dagster/row_count": report.loaded,
        "seconds": round(report.seconds, 3),
        "rows_per_second": round(report.rows_per_second),
        "filed_as": report.filed_as,
        "after_id": report.after_id,
    }
    if report.bad_rows_key:
        metadata["bad_rows"] = report.bad_rows_key
    if report.conflicts_key:
        metadata["conflicts"] = report.conflicts_key
    if report.problems:
        problems = pd.DataFrame(report.problems.most_common(), columns=["problem", "rows"])
        metadata["problems"] = table(problems)
    if report.reason:
        metadata["reason"] = dg.MetadataValue.json(json.loads(json.dumps(report.reason, default=str)))
    if not report.preview.empty:
        metadata["preview"] = table(report.preview)
    return metadata


@dg.asset(
    group_name=GROUP,
    partitions_def=incoming_files,
    retry_policy=RETRY,
    kinds={"s3", "postgres"},
    description="Readings from one CSV under incoming/: validated, bulk-loaded (COPY) into the readings table "
    "without duplicates, the file moved to processed/ (or to rejected/ with its reason).",
)
def raw_readings(
    context: dg.AssetExecutionContext, readings_store: ReadingsStore, object_store: ObjectStore
) -> dg.MaterializeResult:
    return _ingest(context, readings_store, object_store, READINGS.kind)


@dg.asset(
    group_name=GROUP,
    partitions_def=peripheral_files,
    retry_policy=RETRY,
    kinds={"s3", "postgres"},
    description="Peripheral-device readings (power meter, vibration, ambient temperature) from one CSV under "
    "incoming/peripheral/, loaded like raw_readings into the peripheral_readings table.",
)
def peripheral_readings(
    context: dg.AssetExecutionContext, readings_store: ReadingsStore, object_store: ObjectStore
) -> dg.MaterializeResult:
    return _ingest(context, readings_store, object_store, PERIPHERAL.kind)


READINGS_SPEC = dg.AssetSpec(
    "readings",
    group_name=GROUP,
    kinds={"postgres"},
    description="The readings table: filled by raw_readings and written directly (row by row) by the "
    "generator; downstream assets read it incrementally by id. Observed: row count and max id.",
)


@dg.multi_observable_source_asset(name="readings", specs=[READINGS_SPEC])
def readings(readings_store: ReadingsStore) -> dg.ObserveResult:
    engine = readings_store.engine
    max_id = store.max_reading_id(engine)
    return dg.ObserveResult(
        asset_key=READINGS_SPEC.key,
        data_version=dg.DataVersion(str(max_id)),
        metadata={"dagster/row_count": store.count_readings(engine), "max_id": max_id},
    )


def _expectations(
    context: dg.AssetCheckExecutionContext, readings_store: ReadingsStore, asset: dg.AssetKey
) -> dg.AssetCheckResult:
    # Great Expectations takes seconds to import: only when a check runs.
    from mfd import expectations as checks
    from mfd.ingestion import expectations

    key = object_key(context.partition_key)
    status = _latest_metadata(context.instance, asset, key)
    if status.get("status") == "rejected":
        return dg.AssetCheckResult(
            passed=False,
            metadata={"status": "rejected", "reason": status.get("reason", "")},
            description=f"{key} was rejected whole, nothing loaded",
        )
    layout = ingest.layout_for(key)
    after_id = int(status.get("after_id", 0))
    rows = ingest.read_loaded(readings_store.engine, key, limit=CHECK_MAX_ROWS, after_id=after_id)
    frame = expectations.with_time_steps(rows.drop(columns=["id", "source"]))
    passed, summary = checks.validate(frame, expectations.loaded_rows_suite(layout))
    results = checks.summary_table(summary)
    return dg.AssetCheckResult(
        passed=passed,
        metadata=rounded(
            {
                "rows_checked": summary["rows"],
                "evaluated_expectations": summary["evaluated_expectations"],
                "successful_expectations": summary["successful_expectations"],
                "expectations": table(results),
            }
        ),
    )


def _latest_metadata(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str) -> dict[str, object]:
    """Metadata values of the latest materialization of one partition (empty if none)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=1
    ).records
    if not records or records[0].asset_materialization is None:
        return {}
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


@dg.asset_check(
    asset=raw_readings,
    blocking=True,
    partitions_def=incoming_files,
    description="Great Expectations on the rows loaded from the file: schema, not-null, physical ranges, "
    "allowed machine types and labels, unique (machine_id, timestamp), timestamps increasing per machine.",
)
def raw_readings_expectations(
    context: dg.AssetCheckExecutionContext, readings_store: ReadingsStore
) -> dg.AssetCheckResult:
    return _expectations(context, readings_store, raw_readings.key)


@dg.asset_check(
    asset=peripheral_readings,
    blocking=True,
    partitions_def=peripheral_files,
    description="Great Expectations on the peripheral rows loaded from the file: schema, not-null, physical "
    "ranges, unique (machine_id, timestamp), timestamps increasing per machine.",
)
def peripheral_readings_expectations(
    context: dg.AssetCheckExecutionContext, readings_store: ReadingsStore
) -> dg.AssetCheckResult:
    return _expectations(context, readings_store, peripheral_readings.key)
