"""Sensors and schedules that drive the asset graph; the ones that need settings are built from them."""

from __future__ import annotations

import dagster as dg

from mfd.settings import Settings
from mfd_sensors.champion import build_champion_changed_sensor
from mfd_sensors.incoming import incoming_files_sensor
from mfd_sensors.prediction import build_prediction_sensor

SCHEDULES: list[dg.ScheduleDefinition] = []


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """Every sensor of the code location, configured by `settings`."""
    return [
        build_prediction_sensor(settings.prediction_batch_rows, settings.prediction_runs_per_tick),
        build_champion_changed_sensor(settings),
        incoming_files_sensor,
    ]
