"""Sensors and schedules that drive the asset graph; the ones that need settings are built from them."""

from __future__ import annotations

import dagster as dg

from mfd.settings import Settings
from mfd_assets.jobs import drift_job
from mfd_sensors.alerts import alert_delivery_sensor
from mfd_sensors.champion import build_champion_changed_sensor
from mfd_sensors.incoming import incoming_files_sensor
from mfd_sensors.maintenance import maintenance_files_sensor
from mfd_sensors.prediction import build_prediction_sensor
from mfd_sensors.promotion import build_shadow_promotion_sensor
from mfd_sensors.retraining import RetrainPolicy, build_retraining_sensor, run_failure_sensor

# drift_report hourly: a failed drift check is what retraining_sensor's drift trigger waits for.
drift_schedule = dg.ScheduleDefinition(
    name="drift_schedule",
    job=drift_job,
    cron_schedule="0 * * * *",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="drift_report every hour; its failed check starts retraining (retraining_sensor).",
)
SCHEDULES: list[dg.ScheduleDefinition] = [drift_schedule]


def build_sensors(settings: Settings) -> list[dg.SensorDefinition]:
    """Every sensor of the code location, configured by `settings`."""
    return [
        build_prediction_sensor(settings.prediction_batch_rows, settings.prediction_runs_per_tick),
        build_champion_changed_sensor(settings),
        incoming_files_sensor,
        maintenance_files_sensor,
        build_retraining_sensor(RetrainPolicy.from_settings(settings)),
        run_failure_sensor,
        alert_delivery_sensor,
        build_shadow_promotion_sensor(),
    ]
