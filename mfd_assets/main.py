"""The main job behind `make run`: generate a plant's readings, ingest every incoming file, then
materialize the rest of the graph (preparation -> quality -> training -> serving -> detection).

Runs on whatever the MFD_* settings name (embedded defaults under .mfd/ when none are set) and records
every run in the Dagster instance at DAGSTER_HOME, so they all show up in `dagster dev` afterwards.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import dagster as dg

from mfd.cli import main as cli
from mfd.ingestion.incoming import partition_key
from mfd.storage import readings as store
from mfd.storage.objects import INCOMING
from mfd_assets.definitions import defs, settings
from mfd_sensors.incoming import PERIPHERAL_ROUTE, READINGS_ROUTE, Route, route

# Step events at INFO: the full DEBUG event stream stays in the Dagster UI.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(started: float, what: str) -> None:
    print(f"   {what} ({time.perf_counter() - started:.1f} s)", flush=True)


def ingest_incoming(instance: dg.DagsterInstance) -> tuple[int, int]:
    """Add a partition per incoming file and run its ingestion job, routed as incoming_files_sensor routes
    it; returns (reading, peripheral) files."""
    objects = defs.resources["object_store"].objects()
    files: dict[Route, list[str]] = {READINGS_ROUTE: [], PERIPHERAL_ROUTE: []}
    for obj in objects.list(INCOMING):
        files[route(obj.key)].append(obj.key)
    for target, keys in files.items():
        instance.add_dynamic_partitions(target.partitions.name, [partition_key(k) for k in keys])
        job = defs.resolve_job_def(target.job.name)
        for key in keys:
            result = job.execute_in_process(
                partition_key=partition_key(key), instance=instance, run_config=QUIET, raise_on_error=True
            )
            print(f"   {key}: {'ok' if result.success else 'FAILED'}", flush=True)
    return len(files[READINGS_ROUTE]), len(files[PERIPHERAL_ROUTE])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfd_assets.main", description=__doc__)
    parser.add_argument("--machines", type=int, default=20, help="machines in the fleet (default 20)")
    parser.add_argument("--rows", type=int, default=20_000, help="readings to generate (default 20,000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    args = parser.parse_args(argv)
    instance = dg.DagsterInstance.get()

    started = _step(f"generate {args.rows:,} readings from {args.machines} machines into incoming/")
    status = cli.main(
        ["generate", "--machines", str(args.machines), "--rows", str(args.rows), "--seed", str(args.seed)]
        + ["--sink", "files", "--file-rows", "5000", "--peripheral", "--quiet"]
    )
    if status:
        return status
    _done(started, "generated")

    started = _step("ingest every incoming file (one raw_readings / peripheral_readings partition each)")
    n_readings, n_peripheral = ingest_incoming(instance)
    _done(started, f"{n_readings} reading files, {n_peripheral} peripheral files")

    started = _step("preparation, augmentation, quality, training, serving")
    defs.resolve_job_def("main_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=True
    )
    _done(started, "materialized")

    started = _step("detection: score every stored reading, drift report")
    last_id = store.max_reading_id(defs.resources["readings_store"].engine)
    defs.resolve_job_def("prediction_job").execute_in_process(
        instance=instance,
        run_config={**QUIET, "ops": {"prediction_batches": {"config": {"first_id": 1, "last_id": last_id}}}},
        raise_on_error=True,
    )
    defs.resolve_job_def("drift_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=True
    )
    _done(started, f"readings 1..{last_id} scored")

    print(
        f"\nDone. Readings: {store.describe(settings.readings_url)}; files: {settings.objects_dir}; "
        f"MLflow: {settings.tracking_uri}; Dagster runs: {instance.root_directory}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
