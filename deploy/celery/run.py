"""Run one job of a code location from this process, which orchestrates it with the location's executor:
with deploy/celery/definitions.py (the default) every step is a Celery task run by whichever worker takes it.

    python deploy/celery/run.py main_job [--select training_set,cleaned_set] [--config run_config.yaml]
        [--location deploy/celery/definitions.py]

DAGSTER_HOME must hold the PostgreSQL instance (deploy/dagster/dagster.yaml): the workers write the steps'
events into it. Prints `run_id=<id> success=<bool> seconds=<wall time>`; exits 1 when the run failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.definitions.reconstruct import ReconstructableRepository

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("job")
    parser.add_argument("--select", default="", help="comma-separated asset keys: a subset of the job")
    parser.add_argument("--config", type=Path, help="run config YAML (ops: ...)")
    parser.add_argument("--location", type=Path, default=HERE / "definitions.py")
    args = parser.parse_args(argv)
    repo = ReconstructableRepository.for_file(str(args.location.resolve()), "defs", str(HERE.parents[1]))
    job = repo.get_reconstructable_job(args.job)
    run_config = yaml.safe_load(args.config.read_text()) if args.config else None
    selection = [dg.AssetKey(key) for key in args.select.split(",") if key] or None
    started = time.monotonic()
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, run_config=run_config, asset_selection=selection)
        for record in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
            event = record.dagster_event
            if event is not None and "in celery worker" in (event.message or ""):
                worker = event.engine_event_data.metadata.get("Celery worker")
                print(f"step {event.step_key}: celery worker {getattr(worker, 'value', worker)}", flush=True)
    print(
        f"run_id={result.run_id} success={result.success} seconds={time.monotonic() - started:.1f}",
        flush=True,
    )
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
