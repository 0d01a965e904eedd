"""The code location: assets by group (each module with its checks), jobs, sensors, and resources picked by
deployment. The settings are read here, once, and reach sensors and resources as arguments.

Assembled with `load_assets_from_modules` rather than `dg.load_from_defs_folder`: the latter needs a
`[tool.dg]` project with a `defs/` package and only collects module-level definitions, while the sensors
and resources here are built from the settings, so it would not make this file shorter.
"""

from __future__ import annotations

import dagster as dg

from mfd.settings import load_settings
from mfd_assets import ASSET_MODULES
from mfd_assets.jobs import JOBS
from mfd_resources import resources_for
from mfd_resources.io_manager import ObjectStoreIOManager
from mfd_sensors import SCHEDULES, build_sensors

# Who answers for each group's assets (shown on every asset in the UI), and the kinds of the groups whose
# assets name none of their own.
OWNERS: dict[str, str] = {
    "ingestion": "team:data-engineering",
    "preparation": "team:data-engineering",
    "augmentation": "team:data-science",
    "quality": "team:data-science",
    "training": "team:data-science",
    "serving": "team:ml-platform",
    "detection": "team:ml-platform",
}
GROUP_KINDS: dict[str, set[str]] = {"augmentation": {"pandas", "pytorch"}, "quality": {"sklearn"}}


def with_owner_and_kinds(spec: dg.AssetSpec) -> dg.AssetSpec:
    """The spec with its group's owner when it names none, and its group's kinds when it has none."""
    group = spec.group_name or ""
    owners = spec.owners or ([OWNERS[group]] if group in OWNERS else [])
    kinds = spec.kinds or GROUP_KINDS.get(group, set())
    return spec.replace_attributes(owners=owners, kinds=kinds)


settings = load_settings()
resources = resources_for(settings)

defs = dg.Definitions(
    assets=[
        dg.map_asset_specs(with_owner_and_kinds, [a])[0] if isinstance(a, dg.AssetsDefinition) else a
        for a in dg.load_assets_from_modules(ASSET_MODULES)
    ],
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    jobs=JOBS,
    # Steps of one run share a process, as in `make run`: a step subprocess costs seconds to start.
    executor=dg.in_process_executor,
    # Step events at INFO on the console (the CLI, make run); the event log keeps the full DEBUG stream.
    loggers={"console": dg.colored_console_logger.configured({"log_level": "INFO"})},
    sensors=build_sensors(settings),
    schedules=SCHEDULES,
    # Asset outputs live on the object store (S3 or its local twin), not on one machine's disk.
    resources={**resources, "io_manager": ObjectStoreIOManager(object_store=resources["object_store"])},
)


def with_executor(executor: dg.ExecutorDefinition) -> dg.Definitions:
    """This code location's definitions with `executor` as the default instead of the in-process one
    (deploy/celery, deploy/k8s); jobs that set their own executor keep it."""
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        sensors=defs.sensors,
        schedules=defs.schedules,
        resources=defs.resources,
        loggers=defs.loggers,
        executor=executor,
    )
