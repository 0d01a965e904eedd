"""`maintenance_files_sensor`: maintenance CSV files waiting under incoming/maintenance/ become one
`maintenance_records` run (the files are small; one run files them all)."""

from __future__ import annotations

import hashlib

import dagster as dg

from mfd.ingestion.incoming import version
from mfd.ingestion.maintenance import MAINTENANCE_PREFIX
from mfd_assets.jobs import maintenance_job
from mfd_resources import ObjectStore


@dg.sensor(
    job=maintenance_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Lists incoming/maintenance/; one maintenance_records run per new set of file versions "
    "(run key = digest of their key@ETag).",
)
def maintenance_files_sensor(
    context: dg.SensorEvaluationContext, object_store: ObjectStore
) -> dg.RunRequest | dg.SkipReason:
    objects = object_store.objects()
    waiting = sorted(version(o) for o in objects.list(MAINTENANCE_PREFIX) if not o.key.endswith("/"))
    if not waiting:
        return dg.SkipReason(f"no files under {MAINTENANCE_PREFIX} in {objects.describe()}")
    digest = hashlib.sha256("\n".join(waiting).encode()).hexdigest()[:16]
    return dg.RunRequest(run_key=f"maintenance-{digest}", tags={"mfd/files": str(len(waiting))})
