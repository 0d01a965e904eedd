"""`alert_delivery_sensor`: a delivery pass (`alert_deliveries`) whenever the outbox holds due alerts and
webhooks are configured, one pass at a time, apart from detection. With no webhook configured, each tick
drops the pending alerts (they have nowhere to go; their events stay in `failure_events`); the daemon's log
says so once, and so does the UI: the first such tick starts one delivery run, whose `alert_deliveries`
metadata says no webhook is configured and how many alerts it dropped."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from mfd.alerts.outbox import drop_undeliverable, due_ids
from mfd_assets.jobs import alert_delivery_job
from mfd_resources import ReadingsStore
from mfd_resources.alerts import AlertWebhooks
from mfd_sensors.runs import run_in_progress

NO_TARGET = "no-target"
NO_TARGET_REASON = "no webhook configured (MFD_WEBHOOK_URLS or MFD_SLACK_WEBHOOK_URLS)"


@dg.sensor(
    job=alert_delivery_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Starts alert_delivery_job when the alert outbox holds due alerts and a webhook is set; "
    "with no webhook set, drops the pending alerts each tick (their events stay in failure_events).",
)
def alert_delivery_sensor(
    context: dg.SensorEvaluationContext, readings_store: ReadingsStore, alert_webhooks: AlertWebhooks
) -> dg.RunRequest | dg.SensorResult | dg.SkipReason:
    if not alert_webhooks.targets():
        if context.cursor != NO_TARGET:  # said once, until a webhook is set: in the daemon's log, and in the
            # UI as alert_deliveries' metadata by one delivery run (it drops what is pending and says so)
            context.log.warning(
                f"{NO_TARGET_REASON}: alerts are not kept in the outbox (events stay in failure_events)"
            )
            return dg.SensorResult(
                run_requests=[
                    dg.RunRequest(
                        run_key=f"{NO_TARGET}-{datetime.now(UTC):%Y%m%dT%H%M%S}", tags={"mfd/no_target": "1"}
                    )
                ],
                cursor=NO_TARGET,
            )
        dropped = drop_undeliverable(readings_store.engine)
        return dg.SkipReason(f"{NO_TARGET_REASON}: {dropped} pending alert(s) dropped from the outbox")
    if context.cursor == NO_TARGET:
        context.update_cursor("")
    running = run_in_progress(context.instance, alert_delivery_job.name)
    if running is not None:
        return dg.SkipReason(f"delivery run {running.run_id} still in progress")
    due = due_ids(readings_store.engine, datetime.now(UTC), limit=1)
    if not due:
        return dg.SkipReason("no alert due")
    return dg.RunRequest(tags={"mfd/first_due_alert": str(due[0])})
