"""The mfd code location with the dagster-celery executor: each step of a run becomes a Celery task, so
steps spread over as many worker machines as run `dagster-celery worker start -A dagster_celery.app`
(each with the mfd package installed and the MFD_* environment). Steps share inputs and outputs through
the S3 IO manager, never a disk. Load it with `deploy/celery/workspace.yaml`; the broker and result
backend come from MFD_CELERY_BROKER_URL / MFD_CELERY_BACKEND_URL (e.g. redis://redis:6379/0).

prediction_job keeps its in-process executor: a 30-second batch is one step, not worth a task hop.
"""

from dagster_celery import celery_executor

from mfd_assets.definitions import with_executor

executor = celery_executor.configured(
    {"broker": {"env": "MFD_CELERY_BROKER_URL"}, "backend": {"env": "MFD_CELERY_BACKEND_URL"}},
    name="celery",
)

defs = with_executor(executor)
