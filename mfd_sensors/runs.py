"""The runs a sensor looks for before it requests another."""

from __future__ import annotations

import dagster as dg
from dagster import DagsterRunStatus

# A run in one of these has not finished yet.
IN_PROGRESS = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
)


def run_in_progress(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun | None:
    """The newest run of `job_name` that has not finished; None when there is none."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=list(IN_PROGRESS)), limit=1)
    return runs[0] if runs else None
