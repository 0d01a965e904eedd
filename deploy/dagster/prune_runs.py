"""Run and event-log retention for a Dagster instance: delete finished runs created more than --days ago
(failed and canceled ones after --failed-days, kept longer for the post-mortem), each with its whole event
log, through the instance API (`DagsterInstance.delete_run`). Runs not finished (queued, starting, started,
canceling) are never touched. Schedule and sensor ticks are pruned by the daemon itself (`retention:` in
dagster.yaml). Asset materializations of deleted runs go with their event logs: the assets' latest state
stays in the newer runs, and the readings, models and files themselves are not in the event log.

    DAGSTER_HOME=... python deploy/dagster/prune_runs.py --days 90 --failed-days 365 [--dry-run]

Prints `deleted N runs (M failed or canceled), kept K finished runs` (or `would delete` with --dry-run).
Run it daily (cron, a Kubernetes CronJob) beside the daemon; docs/operating.md "Retention".
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import dagster as dg

FINISHED_OK = [dg.DagsterRunStatus.SUCCESS]
FINISHED_BAD = [dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]
PAGE = 500


@dataclass(frozen=True)
class Pruned:
    deleted: list[str]
    deleted_failed: int
    kept: int


def expired_runs(
    instance: dg.DagsterInstance, statuses: list[dg.DagsterRunStatus], created_before: datetime
) -> list[str]:
    """Ids of the runs in `statuses` created before `created_before`, oldest first."""
    found: list[str] = []
    cursor = None
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(statuses=statuses, created_before=created_before),
            limit=PAGE,
            cursor=cursor,
            ascending=True,
        )
        found += [r.dagster_run.run_id for r in records]
        if len(records) < PAGE:
            return found
        cursor = records[-1].dagster_run.run_id


def prune_runs(
    instance: dg.DagsterInstance,
    days: float,
    failed_days: float,
    now: datetime | None = None,
    dry_run: bool = False,
) -> Pruned:
    """Delete (unless `dry_run`) the finished runs past their retention, with their event logs."""
    now = now or datetime.now(UTC)
    ok = expired_runs(instance, FINISHED_OK, now - timedelta(days=days))
    bad = expired_runs(instance, FINISHED_BAD, now - timedelta(days=failed_days))
    if not dry_run:
        for run_id in ok + bad:
            instance.delete_run(run_id)
    finished = instance.get_runs_count(dg.RunsFilter(statuses=FINISHED_OK + FINISHED_BAD))
    return Pruned(ok + bad, len(bad), finished - len(ok + bad) if dry_run else finished)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=90, help="keep successful runs this long (default 90)")
    parser.add_argument(
        "--failed-days", type=float, default=365, help="keep failed/canceled runs (default 365)"
    )
    parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    args = parser.parse_args(argv)
    with dg.DagsterInstance.get() as instance:
        pruned = prune_runs(instance, args.days, args.failed_days, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"{verb} {len(pruned.deleted)} runs ({pruned.deleted_failed} failed or canceled), kept {pruned.kept} finished runs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
