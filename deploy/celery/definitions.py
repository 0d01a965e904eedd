"""The mfd code location with the dagster-celery executor: each step of a run becomes a Celery task, so
steps spread over as many worker machines as run `dagster-celery worker start -A dagster_celery.app`
(each with the mfd package installed and the MFD_* environment). Steps share inputs and outputs through
the S3 IO manager, never a disk. Load it with `deploy/celery/workspace.yaml`; the broker and result
backend come from MFD_CELERY_BROKER_URL / MFD_CELERY_BACKEND_URL (e.g. redis://redis:6379/0).

prediction_job keeps its in-process executor: a 30-second batch is one step, not worth a task hop.
"""

import dagster as dg
from dagster_celery import celery_executor

from mfd_assets.definitions import defs as mfd_defs

executor = celery_executor.configured(
    {"broker": {"env": "MFD_CELERY_BROKER_URL"}, "backend": {"env": "MFD_CELERY_BACKEND_URL"}},
    name="celery",
)

# mfd_assets.definitions sets its own default executor (in-process): the same definitions with this one.
defs = dg.Definitions(
    assets=mfd_defs.assets,
    asset_checks=mfd_defs.asset_checks,
    jobs=mfd_defs.jobs,
    sensors=mfd_defs.sensors,
    schedules=mfd_defs.schedules,
    resources=mfd_defs.resources,
    loggers=mfd_defs.loggers,
    executor=executor,
)
