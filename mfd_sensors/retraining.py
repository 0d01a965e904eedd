"""Retraining that starts itself, and the record of failed runs.

`retraining_sensor` starts `retraining_job` (training_job's candidate and gated champion, on a training set
rebuilt from the readings and maintenance labels of now) for three reasons, each with its own cooldown:

- `drift`: the latest `drift_report` check `drift_within_thresholds` failed, and that evaluation started
  no run yet;
- `labels`: the readings a training set would hold now outnumber the champion's training set (the MLflow
  run tag `labelled_readings`) and the last labels-started run by `new_labels`;
- `schedule`: no run started for `every` (the first tick starts the clock).

Triggers due in the same tick start one run: its `mfd/trigger` tag names the first (drift, labels,
schedule), `mfd/triggers` all of them, and its run key is made of them. No run starts while one is in
progress. The gated promotion decides whether the new candidate becomes champion; a run that fails never
reaches it, so the champion stays, and `run_failure_sensor` records why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from mlflow.exceptions import MlflowException

from mfd.modeling.model_io import CHAMPION
from mfd.preparation.labels import LABELLED_READINGS_TAG, count_labelled, label_window
from mfd.preparation.training_set import DEFAULT_LABEL_WINDOW
from mfd.settings import Settings
from mfd.storage.tables import run_failures
from mfd_assets.jobs import retraining_job
from mfd_resources import ReadingsStore, Tracking
from mfd_sensors.runs import run_in_progress

TRIGGER_TAG = "mfd/trigger"
TRIGGERS = ("drift", "labels", "schedule")  # in the order that names a run started by several
FAILED_RETRAIN_TAG = "last_failed_retrain"  # on the registered model: the run id and why it failed
DRIFT_CHECK = dg.AssetCheckKey(dg.AssetKey("drift_report"), "drift_within_thresholds")


@dataclass(frozen=True)
class RetrainPolicy:
    """When to retrain: `new_labels` more labelled readings, every `every`, cooldowns per trigger."""

    new_labels: int = 1000
    every: timedelta = timedelta(days=7)
    drift_cooldown: timedelta = timedelta(hours=12)
    labels_cooldown: timedelta = timedelta(hours=6)
    label_window: str = DEFAULT_LABEL_WINDOW

    @classmethod
    def from_settings(cls, settings: Settings) -> RetrainPolicy:
        return cls(
            new_labels=settings.retrain_new_labels,
            every=settings.retrain_every,
            drift_cooldown=settings.retrain_drift_cooldown,
            labels_cooldown=settings.retrain_labels_cooldown,
        )

    def cooldown(self, trigger: str) -> timedelta:
        return {"drift": self.drift_cooldown, "labels": self.labels_cooldown, "schedule": self.every}[trigger]


@dataclass(frozen=True)
class RetrainCursor:
    """When each trigger last started a run, the drift evaluation and the label count it started on."""

    started: dict[str, datetime] = field(default_factory=dict)
    drift_evaluation: int = 0
    labels_at: int = 0

    @classmethod
    def parse(cls, text: str | None) -> RetrainCursor:
        if not text:
            return cls()
        data = json.loads(text)
        started = {k: datetime.fromisoformat(v) for k, v in data["started"].items()}
        return cls(started, int(data["drift_evaluation"]), int(data["labels_at"]))

    def dumps(self) -> str:
        started = {k: v.isoformat() for k, v in self.started.items()}
        data = {"started": started, "drift_evaluation": self.drift_evaluation, "labels_at": self.labels_at}
        return json.dumps(data, sort_keys=True)

    def cooled(self, trigger: str, policy: RetrainPolicy, now: datetime) -> bool:
        last = self.started.get(trigger)
        return last is None or now - last >= policy.cooldown(trigger)


def _failed_drift_evaluation(instance: dg.DagsterInstance) -> int | None:
    """The storage id of the latest drift check evaluation when it failed, else None."""
    records = instance.event_log_storage.get_latest_asset_check_execution_by_key([DRIFT_CHECK])
    record = records.get(DRIFT_CHECK)
    if record is None or record.status.value != "FAILED":
        return None
    return int(record.id)


def champion_labelled_readings(tracking: Tracking) -> int:
    """The training-set size the champion was trained on (its run's `labelled_readings` tag), 0 if unknown."""
    client = tracking.client()
    try:
        mv = client.get_model_version_by_alias(tracking.model_name, CHAMPION)
        tag = client.get_run(mv.run_id).data.tags.get(LABELLED_READINGS_TAG) if mv.run_id else None
    except MlflowException:
        return 0
    return int(tag) if tag else 0


def _retraining_in_progress(instance: dg.DagsterInstance) -> bool:
    return run_in_progress(instance, retraining_job.name) is not None


def build_retraining_sensor(policy: RetrainPolicy, name: str = "retraining_sensor") -> dg.SensorDefinition:
    """The sensor, configured by `policy` (from the MFD_RETRAIN_* settings)."""
    window = label_window(policy.label_window)

    @dg.sensor(
        name=name,
        job=retraining_job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts retraining_job on a failed drift check, {policy.new_labels} new labelled "
        f"readings or every {policy.every}, each with a cooldown; one run for triggers due together.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, readings_store: ReadingsStore, tracking: Tracking
    ) -> dg.SensorResult | dg.SkipReason:
        now = datetime.now(UTC)
        cursor = RetrainCursor.parse(context.cursor)
        if "schedule" not in cursor.started:  # the first tick starts the schedule's clock
            cursor = replace(cursor, started={**cursor.started, "schedule": now})
        if _retraining_in_progress(context.instance):
            context.update_cursor(cursor.dumps())
            return dg.SkipReason("a retraining_job run is in progress")
        due: dict[str, str] = {}
        reasons: list[str] = []
        evaluation = _failed_drift_evaluation(context.instance)
        if evaluation is not None and evaluation > cursor.drift_evaluation:
            if cursor.cooled("drift", policy, now):
                due["drift"] = str(evaluation)
            else:
                reasons.append("drift check failed, drift cooldown not over")
        labelled = count_labelled(readings_store.engine, window)
        baseline = max(champion_labelled_readings(tracking), cursor.labels_at)
        if labelled - baseline >= policy.new_labels:
            if cursor.cooled("labels", policy, now):
                due["labels"] = str(labelled)
            else:
                reasons.append(f"{labelled - baseline} new labelled readings, labels cooldown not over")
        last_run = max(cursor.started.values())
        if now - last_run >= policy.every:
            due["schedule"] = now.strftime("%Y%m%dT%H%M")
        if not due:
            context.update_cursor(cursor.dumps())
            why = "; ".join(reasons) or (
                f"no failed drift check, {labelled - baseline} of {policy.new_labels} new labelled readings, "
                f"next scheduled run after {last_run + policy.every:%Y-%m-%d %H:%M} UTC"
            )
            return dg.SkipReason(why)
        triggers = [t for t in TRIGGERS if t in due]
        cursor = RetrainCursor(
            {**cursor.started, **{t: now for t in triggers}, "schedule": now},
            int(due.get("drift", cursor.drift_evaluation)),
            int(due.get("labels", cursor.labels_at)),
        )
        context.log.info("retraining: %s", ", ".join(f"{t} ({due[t]})" for t in triggers))
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key="retrain-" + "-".join(f"{t}:{due[t]}" for t in triggers),
                    tags={
                        TRIGGER_TAG: triggers[0],
                        "mfd/triggers": ",".join(triggers),
                        "mfd/labelled_readings": str(labelled),
                    },
                )
            ],
            cursor=cursor.dumps(),
        )

    return _sensor


def record_failure(
    readings_store: ReadingsStore, tracking: Tracking, run: dg.DagsterRun, message: str
) -> None:
    """Store the failed run in `run_failures`; a failed retraining run also leaves its reason on the
    registered model (tag `last_failed_retrain`), beside the champion it left untouched."""
    row = {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "trigger": run.tags.get(TRIGGER_TAG),
        "message": message,
        "failed_at": datetime.now(UTC),
    }
    engine = readings_store.engine
    with engine.begin() as conn:
        conn.execute(sa.delete(run_failures).where(run_failures.c.run_id == run.run_id))
        conn.execute(sa.insert(run_failures), [row])
    if run.job_name == retraining_job.name:
        try:
            tracking.client().set_registered_model_tag(
                tracking.model_name, FAILED_RETRAIN_TAG, f"{run.run_id}: {message}"[:4000]
            )
        except MlflowException:
            pass  # no registered model yet: the table holds the record


@dg.run_failure_sensor(
    name="run_failure_sensor",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Records every failed run in the readings database (run_failures) with its error; a failed "
    "retraining run also tags the registered model with why.",
)
def run_failure_sensor(
    context: dg.RunFailureSensorContext, readings_store: ReadingsStore, tracking: Tracking
) -> None:
    message = context.failure_event.message or "run failed"
    context.log.warning(
        "run %s of %s failed: %s", context.dagster_run.run_id, context.dagster_run.job_name, message
    )
    record_failure(readings_store, tracking, context.dagster_run, message)
