"""`incoming_files_sensor`: every 5 s, each new object version under `incoming/` becomes one run, and a
version that stays there after its run is requested again or reported.

`route` says which partition set and job a key belongs to; `mfd_assets.main` routes files with it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from mfd.ingestion.incoming import (
    MAX_ATTEMPTS,
    MAX_PER_TICK,
    STUCK_AFTER,
    IncomingCursor,
    is_peripheral,
    look,
    partition_key,
    version,
)
from mfd.storage.objects import ObjectInfo
from mfd_assets.ingestion import incoming_files, peripheral_files
from mfd_assets.jobs import ingest_peripheral_job, ingest_readings_job
from mfd_resources import ObjectStore
from mfd_sensors.runs import IN_PROGRESS


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: there are two, READINGS and PERIPHERAL
class Route:
    """Where an incoming file goes: its dynamic partition set and the job that ingests it."""

    partitions: dg.DynamicPartitionsDefinition
    job: dg.UnresolvedAssetJobDefinition


MAX_REPORTED = 10  # files out of attempts logged by name each tick (the skip message counts them all)
# A file waits for this tick after its upload (one listing of incoming/ a tick; its share of the stack's
# reading -> prediction latency: docs/operating.md).
INTERVAL_S = 5
READINGS_ROUTE = Route(incoming_files, ingest_readings_job)
PERIPHERAL_ROUTE = Route(peripheral_files, ingest_peripheral_job)


def route(key: str) -> Route:
    """The route of object `key`: peripheral files under incoming/peripheral/, readings otherwise."""
    return PERIPHERAL_ROUTE if is_peripheral(key) else READINGS_ROUTE


def _request(obj: ObjectInfo, run_key: str) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run_key,
        partition_key=partition_key(obj.key),
        job_name=route(obj.key).job.name,
        tags={"mfd/version": version(obj), "mfd/etag": obj.etag, "mfd/bytes": str(obj.size)},
    )


def _in_progress(instance: dg.DagsterInstance, obj: ObjectInfo) -> bool:
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"mfd/version": version(obj)}), limit=1)
    return bool(runs) and runs[0].status in IN_PROGRESS


@dg.sensor(
    jobs=[ingest_readings_job, ingest_peripheral_job],
    minimum_interval_seconds=INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists incoming/ in the object store; one run per new object version (run key = key@ETag) "
    "once it has settled (S3: its LastModified second has passed; local store: unchanged for one interval), "
    "adding the key as a partition of raw_readings (or peripheral_readings for incoming/peripheral/). A "
    f"version still waiting {STUCK_AFTER} after its run is requested again (up to {MAX_ATTEMPTS} runs), "
    "then reported.",
)
def incoming_files_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStore
) -> dg.SensorResult | dg.SkipReason:
    objects = object_store.objects()
    now = datetime.now(UTC)
    previous = IncomingCursor.parse(context.cursor)
    tick = look(objects, previous, now, MAX_PER_TICK)
    handed = [(obj, version(obj)) for obj in tick.new]  # (object, run key)
    cursor = tick.cursor
    for obj, attempts in tick.stuck:
        if _in_progress(context.instance, obj):
            continue
        context.log.warning(
            "%s is still in incoming/ after %d run(s): requesting it again", obj.key, attempts
        )
        handed.append((obj, f"{version(obj)}#attempt-{attempts + 1}"))
        cursor = cursor.retried_now(obj, now)
    for obj in tick.given_up[:MAX_REPORTED]:
        context.log.error(
            "%s is still in incoming/ after %d runs: see the failed runs tagged mfd/version=%s; fix the "
            "cause, then upload the file again (a new ETag starts over)",
            obj.key,
            MAX_ATTEMPTS,
            version(obj),
        )
    if not handed:
        if cursor != previous:
            context.update_cursor(cursor.dumps())
        stuck = f"; {len(tick.given_up)} stuck after {MAX_ATTEMPTS} runs" if tick.given_up else ""
        writing = (
            f"; {tick.unsettled} not settled yet (changed in the last {objects.settle})"
            if tick.unsettled
            else ""
        )
        return dg.SkipReason(f"no new objects under incoming/ in {objects.describe()}{stuck}{writing}")
    partitions: dict[str, set[str]] = {incoming_files.name: set(), peripheral_files.name: set()}
    for obj, _ in handed:
        partitions[route(obj.key).partitions.name].add(partition_key(obj.key))
    return dg.SensorResult(
        run_requests=[_request(obj, run_key) for obj, run_key in handed],
        dynamic_partitions_requests=[
            dg.AddDynamicPartitionsRequest(name, sorted(keys)) for name, keys in partitions.items() if keys
        ],
        cursor=cursor.dumps(),
    )
