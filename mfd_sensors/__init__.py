"""Sensors and schedules that drive the asset graph."""

from __future__ import annotations

import dagster as dg

from mfd_sensors.champion import champion_changed_sensor
from mfd_sensors.incoming import incoming_files_sensor
from mfd_sensors.prediction import prediction_sensor

SENSORS: list[dg.SensorDefinition] = [prediction_sensor, champion_changed_sensor, incoming_files_sensor]
SCHEDULES: list[dg.ScheduleDefinition] = []
