"""Sensors and schedules that drive the asset graph."""

from __future__ import annotations

import dagster as dg

SENSORS: list[dg.SensorDefinition] = []
SCHEDULES: list[dg.ScheduleDefinition] = []
