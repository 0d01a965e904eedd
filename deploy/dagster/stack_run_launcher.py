"""The stack's run launcher: Dagster's DefaultRunLauncher (runs start in the code server's processes) plus the
worker health check that the daemon's run monitoring needs and the default launcher lacks.

Without it a run whose process died (the stack stopped or the machine crashed mid-run) stayed STARTED for
good after the stack came back: run monitoring logged "Checking run" and never failed it, its readings were
never scored and it held a run slot. With it, run monitoring (deploy/dagster/dagster.yaml, every 10 s)
fails such a run and `run_retries` starts it again.

A run's worker is the process whose pid the code server recorded in the run's "Started process for run
(pid: N)" engine event. It is alive when that pid exists, is no zombie, and was created before the event
was written (a pid reused after a restart was created later). A run with no such event (executed in
process by `dagster asset materialize`, or its worker still starting) is left alone. The check reads this
machine's processes: it holds on the one-machine stack, where the code server runs beside the daemon.

Used by name from deploy/dagster/dagster.yaml (`module: stack_run_launcher`); the stack puts this directory
on PYTHONPATH (mfd/services/stack.py).
"""

from __future__ import annotations

import psutil
from dagster import DagsterEventType, DagsterRun
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus

# A process's creation time comes from boot time + ticks, which drifts from the wall clock (-0.7 s on the
# test host after 1.5 h): generous, so a live worker is never taken for a reused pid. A pid reused after a
# stack restart belongs to a process created when the stack came back (`up` took 68-134 s in the tests).
CREATED_SLACK_S = 30.0


def worker_pid(instance, run_id: str) -> tuple[int, float] | None:  # noqa: ANN001 - DagsterInstance
    """The run's worker pid and when the code server recorded it, or None."""
    for entry in reversed(instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)):
        if entry.message.startswith("Started process for run (pid:"):
            metadata = entry.dagster_event.engine_event_data.metadata
            if "pid" in metadata:
                return int(metadata["pid"].value), entry.timestamp
    return None


def process_alive(pid: int, recorded_at: float) -> bool:
    try:
        process = psutil.Process(pid)
        return (
            process.status() != psutil.STATUS_ZOMBIE
            and process.create_time() <= recorded_at + CREATED_SLACK_S
        )
    except psutil.Error:
        return False


class StackRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher whose run workers the daemon's run monitoring can check (module docstring)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        found = worker_pid(self._instance, run.run_id)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker process recorded: not checked")
        pid, recorded_at = found
        if process_alive(pid, recorded_at):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker process {pid} alive")
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"the run's worker process {pid} is gone (the stack stopped or the machine restarted mid-run)",
        )
