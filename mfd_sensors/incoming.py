"""`incoming_files_sensor`: every 30 s, each new object version under `incoming/` becomes one run."""

import dagster as dg
from dagster._core.definitions.partitions.utils.base import INVALID_PARTITION_SUBSTRINGS

from mfd.ingestion.incoming import MAX_PER_TICK, IncomingCursor, is_peripheral, new_objects, version
from mfd_assets.ingestion import incoming_files, peripheral_files
from mfd_assets.jobs import ingest_peripheral_job, ingest_readings_job
from mfd_resources import ObjectStore


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
        if any(s in obj.key for s in INVALID_PARTITION_SUBSTRINGS):
            context.log.warning(
                "skipping %s: a partition key cannot contain %s", obj.key, INVALID_PARTITION_SUBSTRINGS
            )
            continue
        peripheral = is_peripheral(obj.key)
        partitions[(peripheral_files if peripheral else incoming_files).name].append(obj.key)
        requests.append(
            dg.RunRequest(
                run_key=version(obj),
                partition_key=obj.key,
                job_name=(ingest_peripheral_job if peripheral else ingest_readings_job).name,
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
