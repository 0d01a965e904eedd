"""The code location: assets by group, their checks, jobs, sensors, and resources picked by deployment."""

from __future__ import annotations

import dagster as dg

from mfd.settings import load_settings
from mfd_assets import ASSET_MODULES
from mfd_assets.jobs import JOBS
from mfd_resources import resources_for
from mfd_sensors import SCHEDULES, SENSORS

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=dg.load_asset_checks_from_modules(ASSET_MODULES),
    jobs=JOBS,
    sensors=SENSORS,
    schedules=SCHEDULES,
    resources=resources_for(load_settings()),
)
