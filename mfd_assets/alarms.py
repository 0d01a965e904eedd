"""Alarms: after each prediction batch (the same run of prediction_job), whatever of its readings'
risks `prediction_batches` did not take into `machine_risk` and `alarms` itself (it does, from the scored
frame in memory, unless that failed) taken now (`mfd.alarms`), snoozes that ran out woken, and open alarms
left unacknowledged escalated once through the alert outbox."""

from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field

from mfd.alarms import escalate_due, read_scored, update_alarms, wake_snoozed
from mfd.alarms.model import DEFAULT_DEBOUNCE
from mfd_assets.metadata import rounded
from mfd_resources import ReadingsStore

GROUP = "detection"


class AlarmsConfig(dg.Config):
    debounce: int | None = Field(
        None,
        description="Consecutive readings past the threshold that open an alarm (default: the profile's, "
        "which prediction_batches uses when it takes its batch itself).",
        ge=1,
    )
    escalate_after_minutes: float = Field(
        30.0, description="An open alarm unacknowledged this long escalates once (a webhook alert).", gt=0
    )
    first_id: int | None = Field(
        None, description="First reading id to take when prediction_batches is not in the same run."
    )
    last_id: int | None = Field(None, description="Last reading id (with first_id).")


def _batch_of_run(context: dg.AssetExecutionContext) -> dict[str, Any] | None:
    """This run's prediction_batches materialization metadata (first_id, last_id, thresholds), if any."""
    records = context.instance.all_logs(context.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    for record in reversed(records):
        materialization = record.asset_materialization
        if materialization is not None and materialization.asset_key == dg.AssetKey("prediction_batches"):
            return {k: v.value for k, v in materialization.metadata.items()}
    return None


@dg.asset(
    group_name=GROUP,
    deps=["prediction_batches"],
    kinds={"python"},
    # Two runs opening one machine's first alarm at once: the unique open_key fails one; its retry bumps.
    retry_policy=dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL),
)
def alarms(
    context: dg.AssetExecutionContext, config: AlarmsConfig, readings_store: ReadingsStore
) -> dg.MaterializeResult:
    """The batch's scored readings into alarms: k consecutive crossings open one per machine and kind,
    later ones bump it (count, peak risk, last seen); due snoozes woken; due escalations enqueued."""
    batch = _batch_of_run(context)
    if batch is not None:
        first_id, last_id = int(batch["first_id"]), int(batch["last_id"])
        thresholds = batch.get("thresholds_by_machine_type") or {}
    elif config.first_id is not None and config.last_id is not None:
        first_id, last_id, thresholds = config.first_id, config.last_id, {}
    else:
        raise dg.Failure("alarms runs after prediction_batches in one run, or with first_id and last_id")
    engine = readings_store.engine
    # prediction_batches took its batch from memory (its metadata says so): nothing to read back
    taken_by_detection = batch is not None and "alarm_crossings" in batch
    scored = pd.DataFrame() if taken_by_detection else read_scored(engine, first_id, last_id)
    known = {k: float(v) for k, v in thresholds.items() if k != "all"}
    debounce = config.debounce or DEFAULT_DEBOUNCE
    report = update_alarms(engine, scored, debounce=debounce, thresholds=known or None)
    woke = wake_snoozed(engine)
    escalated = escalate_due(engine, timedelta(minutes=config.escalate_after_minutes))
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "first_id": first_id,
                "last_id": last_id,
                "debounce": debounce,
                "taken_by_prediction_batches": taken_by_detection,
                "readings": report.readings,
                "skipped_already_taken": report.skipped,
                "crossings": report.crossings,
                "opened": report.opened,
                "bumped": report.bumped,
                "machines": report.machines,
                "woke_from_snooze": woke,
                "escalated": dg.MetadataValue.json(escalated),
            }
        )
    )
