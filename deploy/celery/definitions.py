"""The mfd code location with the dagster-celery executor: each step of a run becomes a Celery task, so
steps spread over as many worker machines as run `dagster-celery worker start -A dagster_celery.app -y
deploy/celery/celery.yaml` (each with the mfd package installed and the MFD_* environment). Steps share
inputs and outputs through the S3 IO manager, never a disk, and the run's events through the PostgreSQL
Dagster instance (deploy/dagster/dagster.yaml). Load it with `deploy/celery/workspace.yaml`, or run a job
from one process with `deploy/celery/run.py`; the broker and result backend come from
MFD_CELERY_BROKER_URL / MFD_CELERY_BACKEND_URL (e.g. redis://redis:6379/0 and /1), the rest of the Celery
settings from celery.yaml (MFD_CELERY_CONFIG: another copy of it), which the workers read too.

prediction_job keeps its in-process executor: a detection batch (one every few seconds) is one step, not worth
a task hop.
"""

import os
from pathlib import Path

import yaml
from dagster_celery import celery_executor

from mfd_assets.definitions import with_executor

CONFIG = Path(os.environ.get("MFD_CELERY_CONFIG") or Path(__file__).with_name("celery.yaml"))

executor = celery_executor.configured(
    yaml.safe_load(CONFIG.read_text())["execution"]["config"], name="celery"
)

defs = with_executor(executor)
