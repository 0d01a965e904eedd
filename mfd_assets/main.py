"""The main job behind `make run`: generate a plant's readings, ingest every incoming file, then
materialize the rest of the graph (preparation -> quality -> training -> serving -> detection).

Runs on whatever the MFD_* settings name (embedded defaults under .mfd/ when none are set) and records
every run in the Dagster instance at DAGSTER_HOME (default: the embedded `.mfd/dagster`), so they all show
up in `make dev` afterwards; the sensors there carry on from what this run did.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from mfd.cli import main as cli
from mfd.errors import MfdError
from mfd.ingestion.incoming import partition_key
from mfd.ingestion.maintenance import is_maintenance
from mfd.profiles import DEFAULT_PROFILE
from mfd.schema import PROFILE
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.objects import INCOMING
from mfd_sensors.incoming import PERIPHERAL_ROUTE, READINGS_ROUTE, Route, route

ROOT_INSTANCE_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


def embedded_dagster_home(home: Path) -> Path:
    """DAGSTER_HOME made absolute (Dagster refuses a relative one); unset, `<MFD_HOME>/dagster` holding the
    repository's dagster.yaml with its paths made absolute, the instance `make dev` opens."""
    given = os.environ.get("DAGSTER_HOME")
    path = Path(given).absolute() if given else (home / "dagster").absolute()
    os.environ["DAGSTER_HOME"] = str(path)
    config = path / "dagster.yaml"
    if not config.exists():
        path.mkdir(parents=True, exist_ok=True)
        text = (
            ROOT_INSTANCE_YAML.read_text()
            if ROOT_INSTANCE_YAML.exists()
            else "telemetry:\n  enabled: false\n"
        )
        config.write_text(text.replace("base_dir: .mfd/dagster", f"base_dir: {path}"))
    return path


def _step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def _done(started: float, what: str) -> None:
    print(f"   {what} ({time.perf_counter() - started:.1f} s)", flush=True)


@dataclass
class Ingested:
    """What the ingestion runs loaded, file by file."""

    files: dict[str, int] = field(default_factory=dict)  # route -> files
    maintenance_files: int = 0
    loaded: int = 0
    rejected_rows: int = 0
    rejected_files: list[str] = field(default_factory=list)


def ingest_incoming(defs: dg.Definitions, instance: dg.DagsterInstance) -> Ingested:
    """Add a partition per incoming file and run its ingestion job, routed as incoming_files_sensor routes
    it (the same partition keys, so the sensor never requests these files again)."""
    objects = defs.resources["object_store"].objects()
    files: dict[Route, list[str]] = {READINGS_ROUTE: [], PERIPHERAL_ROUTE: []}
    ingested = Ingested()
    for obj in objects.list(INCOMING):
        if is_maintenance(obj.key):  # maintenance records are maintenance_records' (one run files them all)
            ingested.maintenance_files += 1
        else:
            files[route(obj.key)].append(obj.key)
    for target, keys in files.items():
        instance.add_dynamic_partitions(target.partitions.name, [partition_key(k) for k in keys])
        job = defs.resolve_job_def(target.job.name)
        ingested.files[target.job.name] = len(keys)
        for key in keys:
            result = job.execute_in_process(
                partition_key=partition_key(key), instance=instance, raise_on_error=True
            )
            for event in result.get_asset_materialization_events():
                meta = {k: v.value for k, v in event.materialization.metadata.items()}
                if event.asset_key.path == ["raw_readings"]:
                    ingested.loaded += int(meta.get("rows_loaded", 0))
                    ingested.rejected_rows += int(meta.get("rows_rejected", 0))
                if meta.get("status") == "rejected":
                    ingested.rejected_files.append(key)
            print(f"   {key}: {'ok' if result.success else 'FAILED'}", flush=True)
    if ingested.maintenance_files:
        defs.resolve_job_def("maintenance_job").execute_in_process(instance=instance, raise_on_error=True)
        ingested.files["maintenance_job"] = ingested.maintenance_files
        print(f"   {ingested.maintenance_files} maintenance file(s): filed", flush=True)
    return ingested


def readings_step(args: argparse.Namespace) -> str:
    if PROFILE.name == "cmapss":
        return "import NASA's C-MAPSS FD001 train split (vendored) into incoming/ (profile cmapss)"
    return f"generate {args.rows:,} readings from {args.machines} machines into incoming/ (profile {PROFILE.name})"


def readings_argv(args: argparse.Namespace) -> list[str]:
    """The `mfd` command that puts the plant's readings under incoming/: C-MAPSS FD001's train split for
    `cmapss`, else the profile's generator (with its peripheral devices and failure records if it has them)."""
    if PROFILE.name == "cmapss":
        return ["import", "cmapss", "--subset", "FD001", "--split", "train"]
    argv = ["generate", "--machines", str(args.machines), "--rows", str(args.rows), "--seed", str(args.seed)]
    argv += ["--sink", "files", "--file-rows", "5000", "--quiet"]
    argv += ["--peripheral"] if PROFILE.peripheral else []
    return argv + (["--maintenance"] if PROFILE.failure_records and not PROFILE.label_column else [])


def champion_line(defs: dg.Definitions) -> str:
    """`<name> version <v>: holdout pr_auc ..., roc_auc ...` of the registry's champion."""
    tracking = defs.resources["tracking"]
    status = tracking.champion_status()
    if status.version is None:
        return f"no champion ({status.problem or 'none promoted'})"
    tags = tracking.client().get_model_version(tracking.model_name, status.version).tags
    scores = ", ".join(
        f"{key.removeprefix('holdout_')} {float(value):.3f}"
        for key, value in sorted(tags.items())
        if key.startswith("holdout_")
    )
    return f"{tracking.model_name} version {status.version}" + (f"; holdout {scores}" if scores else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mfd_assets.main", description=__doc__)
    parser.add_argument("--machines", type=int, default=20, help="machines in the fleet (default 20)")
    parser.add_argument("--rows", type=int, default=20_000, help="readings to generate (default 20,000)")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    parser.add_argument("--dagster-port", type=int, default=3000, help="port of `make dev`'s Dagster UI")
    parser.add_argument("--mlflow-port", type=int, default=5000, help="port of `make dev`'s MLflow UI")
    parser.add_argument("--bento-port", type=int, default=3001, help="port to serve the champion on")
    args = parser.parse_args(argv)
    from mfd_assets.definitions import defs, settings  # settings errors: one line, below

    try:
        embedded_dagster_home(settings.home)
    except OSError as exc:
        print(f"mfd: error: cannot prepare DAGSTER_HOME ({exc}); set DAGSTER_HOME", file=sys.stderr)
        return 2
    instance = dg.DagsterInstance.get()
    # Only warnings through the root logger: Dagster's console logger shows the steps and mfd's own lines
    # (dagster.yaml's managed loggers) once; libraries' INFO lines (Great Expectations' per-check docs site)
    # stay out.
    quiet = logging.StreamHandler()
    quiet.setLevel(logging.WARNING)
    logging.basicConfig(handlers=[quiet], format="%(levelname)s %(message)s")
    cli.quiet_mlflow()

    started = _step(readings_step(args))
    status = cli.main(readings_argv(args))
    if status:
        return status
    _done(started, "generated")

    started = _step("ingest every incoming file (one raw_readings / peripheral_readings partition each)")
    ingested = ingest_incoming(defs, instance)
    defs.resolve_job_def("observe_readings_job").execute_in_process(instance=instance)
    files = ", ".join(f"{n} for {job}" for job, n in ingested.files.items())
    _done(started, f"{files}; {ingested.loaded:,} readings loaded, {ingested.rejected_rows:,} rejected")

    started = _step("preparation, augmentation, quality, training, serving")
    defs.resolve_job_def("main_job").execute_in_process(instance=instance, raise_on_error=True)
    _done(started, "materialized")

    started = _step("detection: score every stored reading, drift report")
    last_id = store.max_reading_id(defs.resources["readings_store"].engine)
    scored = defs.resolve_job_def("prediction_job").execute_in_process(
        instance=instance,
        run_config={"ops": {"prediction_batches": {"config": {"first_id": 1, "last_id": last_id}}}},
        raise_on_error=True,
    )
    drift = defs.resolve_job_def("drift_job").execute_in_process(instance=instance, raise_on_error=True)
    _done(started, f"readings 1..{last_id} scored")

    print(summary(args, defs, settings, ingested, last_id, scored, drift))
    return 0


def summary(
    args: argparse.Namespace,
    defs: dg.Definitions,
    settings: Settings,
    ingested: Ingested,
    last_id: int,
    scored: dg.ExecuteInProcessResult,
    drift: dg.ExecuteInProcessResult,
) -> str:
    """What `make run` did and where to look next."""
    [batch] = [
        e
        for e in scored.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("prediction_batches")
    ]
    failures = int(batch.materialization.metadata["failures"].value)
    [check] = [e for e in drift.get_asset_check_evaluations() if e.check_name == "drift_within_thresholds"]
    mlflow_ui = (
        settings.mlflow_tracking_uri
        if settings.mlflow_tracking_uri
        else f"http://127.0.0.1:{args.mlflow_port}"
    )
    rejected = f" ({len(ingested.rejected_files)} files rejected)" if ingested.rejected_files else ""
    default = PROFILE.name == DEFAULT_PROFILE
    profile_arg = "" if default else f" PROFILE={PROFILE.path}"
    profile_env = "" if default else f"MFD_PROFILE={PROFILE.path} "
    return (
        "\nDone.\n"
        f"  profile: {PROFILE.stamp()} ({len(PROFILE.sensors)} sensors; {PROFILE.description})\n"
        f"  readings: {ingested.loaded:,} loaded, {ingested.rejected_rows:,} rejected{rejected}; "
        f"{store.describe(settings.readings_url)}\n"
        f"  champion: {champion_line(defs)}\n"
        f"  failure events: {failures:,} among readings 1..{last_id:,} (`.venv/bin/mfd events --since 1d`)\n"
        f"  drift: {'none' if check.passed else 'WARNING'} ({check.description})\n"
        f"Next: `make dev{profile_arg}`, then\n"
        f"  Dagster UI  http://127.0.0.1:{args.dagster_port}  (every run above; the sensors carry on)\n"
        f"  MLflow UI   {mlflow_ui}  (runs, registered models)\n"
        f"  Bento       http://127.0.0.1:{args.bento_port}  after "
        f"`{profile_env}BENTOML_HOME={settings.bentoml_home} .venv/bin/bentoml serve bento.service:MachineFailureService "
        f"--port {args.bento_port}`"
    )


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MfdError as exc:
        print(f"mfd: error: {exc}", file=sys.stderr)
        sys.exit(2)
