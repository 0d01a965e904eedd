"""`prediction_sensor`: every 5 seconds, the readings after the cursor become prediction_batches runs; a
large backlog in runs sized to it, in their own lane so new readings' runs pass them in the queue; the range of
a run that failed for good requested once more."""

from datetime import UTC, datetime, timedelta

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.detection.planning import DetectionCursor, IdRange, plan_batches
from mfd.registry.champion import champion_version
from mfd.storage.tables import ensure_detection_tables, predictions
from mfd_assets.detection import PredictionBatchConfig
from mfd_assets.jobs import prediction_job
from mfd_resources import ReadingsStore, Tracking

# A reading waits for this tick after it is loaded (its share of the stack's reading -> prediction latency:
# docs/operating.md). A tick without new readings is two max(id) queries and one runs query.
INTERVAL_S = 5
LANE_TAG = "mfd/lane"
RESCUE_TAG = "mfd/again_after"  # on a run requested again for a range whose run failed for good
RESCUE_WINDOW = timedelta(hours=6)
RESCUE_LIMIT = 20
WILL_RETRY_TAG = "dagster/will_retry"  # set by the run-retry daemon on a failed run


def starting_cursor(text: str | None, engine: Engine) -> DetectionCursor:
    """The sensor's cursor; on its first tick, the readings scored already (by `make run`'s prediction_job
    or an earlier instance) count as requested, so opening the UI re-scores nothing."""
    if text:
        return DetectionCursor.parse(text)
    ensure_detection_tables(engine)
    with engine.connect() as conn:
        scored = conn.execute(sa.select(sa.func.max(predictions.c.reading_id))).scalar()
    return DetectionCursor(settled=int(scored or 0))


def lane_tags(backlog: bool) -> dict[str, str]:
    """A backlog run goes in the `backlog` lane (deploy/dagster/dagster.yaml lets one run at a time, at a
    lower priority), so the runs of new readings are never queued behind it."""
    if backlog:
        return {LANE_TAG: "backlog", "dagster/priority": "-1"}
    return {LANE_TAG: "fresh"}


def _request(batch: IdRange, backlog: bool) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=batch.run_key,
        run_config=dg.RunConfig(
            ops={"prediction_batches": PredictionBatchConfig(first_id=batch.first_id, last_id=batch.last_id)}
        ),
        tags={
            "mfd/reading_ids": f"{batch.first_id}-{batch.last_id}",
            "mfd/rows": str(batch.rows),
            **lane_tags(backlog),
        },
    )


def rescue_requests(instance: dg.DagsterInstance, now: datetime) -> list[dg.RunRequest]:
    """The cursor moved past a range when its run was requested: a prediction_job run that failed for good
    (its run retries spent: `dagster/will_retry=false`) in the last RESCUE_WINDOW is requested once more
    with the same range, so its readings are not skipped. Its run key names the failed run's root, so it
    is requested once; a run that was itself such a request is not requested again."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(
            job_name=prediction_job.name,
            statuses=[dg.DagsterRunStatus.FAILURE],
            tags={WILL_RETRY_TAG: "false"},
            updated_after=now - RESCUE_WINDOW,
        ),
        limit=RESCUE_LIMIT,
    )
    requests = []
    for run in (record.dagster_run for record in records):
        if RESCUE_TAG in run.tags or "mfd/reading_ids" not in run.tags:
            continue
        root = run.tags.get("dagster/root_run_id", run.run_id)
        tags = {k: v for k, v in run.tags.items() if k.startswith("mfd/") or k == "dagster/priority"}
        requests.append(
            dg.RunRequest(
                run_key=f"predictions-{run.tags['mfd/reading_ids']}-again-{root}",
                run_config=run.run_config,
                tags={**tags, RESCUE_TAG: root},
            )
        )
    return requests


def build_prediction_sensor(
    max_rows_per_run: int, max_runs_per_tick: int, name: str = "prediction_sensor"
) -> dg.SensorDefinition:
    """The sensor; a backlog is caught up `max_rows_per_run` readings a run, `max_runs_per_tick` runs a tick."""

    @dg.sensor(
        name=name,
        job=prediction_job,
        minimum_interval_seconds=INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests a prediction_batches run per id range of readings not requested before; the "
        "cursor holds the settled frontier, so a reading whose id commits late is still scored once.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, readings_store: ReadingsStore, tracking: Tracking
    ) -> dg.SensorResult | dg.SkipReason:
        cursor = starting_cursor(context.cursor, readings_store.engine)
        batches, after = plan_batches(readings_store.engine, cursor, max_rows_per_run, max_runs_per_tick)
        try:
            rescues = rescue_requests(context.instance, datetime.now(UTC))
        except dg.DagsterInvariantViolationError:  # a context built without an instance (tests): no runs
            rescues = []
        if not batches and not rescues:
            if after != cursor:
                context.update_cursor(after.dumps())
            return dg.SkipReason(
                f"no readings to score after id {cursor.settled} (settled up to {after.settled})"
            )
        version, source = champion_version(
            tracking.tracking_uri, tracking.model_name, tracking.client, tracking.local_home
        )
        if version is None:
            return dg.SkipReason(
                f"{sum(b.rows for b in batches)}+ new readings wait for a champion: {source}"
            )
        context.log.info(
            "champion version %s from %s; %d run(s), %d again after failing for good",
            *(version, source, len(batches), len(rescues)),
        )
        return dg.SensorResult(
            run_requests=[*(_request(batch, batch.rows > max_rows_per_run) for batch in batches), *rescues],
            cursor=after.dumps(),
        )

    return _sensor
