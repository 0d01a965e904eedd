"""`incoming_files_sensor`: every 30 s, each new object version under `incoming/` becomes one run.

`route` says which partition set and job a key belongs to; `mfd_assets.main` routes files with it too.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mfd.ingestion.incoming import MAX_PER_TICK, IncomingCursor, is_peripheral, new_objects, version
from mfd_assets.ingestion import incoming_files, peripheral_files
from mfd_assets.jobs import ingest_peripheral_job, ingest_readings_job
from mfd_resources import ObjectStore
from mfd_sensors.compat import INVALID_PARTITION_SUBSTRINGS, valid_partition_key


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: there are two, READINGS and PERIPHERAL
class Route:
    """Where an incoming file goes: its dynamic partition set and the job that ingests it."""

    partitions: dg.DynamicPartitionsDefinition
    job: dg.UnresolvedAssetJobDefinition


READINGS_ROUTE = Route(incoming_files, ingest_readings_job)
PERIPHERAL_ROUTE = Route(peripheral_files, ingest_peripheral_job)


def route(key: str) -> Route | None:
    """The route of object `key`: peripheral files under incoming/peripheral/, readings otherwise; None
    when Dagster cannot take the key as a partition key."""
    if not valid_partition_key(key):
        return None
    return PERIPHERAL_ROUTE if is_peripheral(key) else READINGS_ROUTE


@dg.sensor(
    jobs=[ingest_readings_job, ingest_peripheral_job],
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists incoming/ in the object store; one run per new object version (run key = key@ETag), "
    "adding the key as a partition of raw_readings (or peripheral_readings for incoming/peripheral/).",
)
def incoming_files_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStore
) -> dg.SensorResult | dg.SkipReason:
    cursor = IncomingCursor.parse(context.cursor)
    found, cursor = new_objects(object_store.objects(), cursor, MAX_PER_TICK)
    if not found:
        return dg.SkipReason(f"no new objects under incoming/ in {object_store.objects().describe()}")
    requests: list[dg.RunRequest] = []
    partitions: dict[str, list[str]] = {incoming_files.name: [], peripheral_files.name: []}
    for obj in found:
        target = route(obj.key)
        if target is None:
            context.log.warning(
                "skipping %s: a partition key cannot contain %s", obj.key, INVALID_PARTITION_SUBSTRINGS
            )
            continue
        partitions[target.partitions.name].append(obj.key)
        requests.append(
            dg.RunRequest(
                run_key=version(obj),
                partition_key=obj.key,
                job_name=target.job.name,
                tags={"mfd/etag": obj.etag, "mfd/bytes": str(obj.size)},
            )
        )
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(name, keys) for name, keys in partitions.items() if keys
        ],
        cursor=cursor.dumps(),
    )
