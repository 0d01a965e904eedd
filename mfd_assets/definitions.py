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
from mfd_sensors import SCHEDULES, build_sensors

settings = load_settings()

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    jobs=JOBS,
    sensors=build_sensors(settings),
    schedules=SCHEDULES,
    resources=resources_for(settings),
)
