"""Sensors and schedules that drive the asset graph."""

from __future__ import annotations

import dagster as dg

from mfd_sensors.prediction import prediction_sensor

SENSORS: list[dg.SensorDefinition] = [prediction_sensor]
SCHEDULES: list[dg.ScheduleDefinition] = []
