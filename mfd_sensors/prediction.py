"""`prediction_sensor`: every 5 seconds, the readings after the cursor become prediction_batches runs; a
large backlog in runs sized to it, in their own lane so new readings' runs pass them in the queue."""

import dagster as dg
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from mfd.detection.planning import DetectionCursor, plan_batches
from mfd.registry.champion import champion_version
from mfd.storage.tables import ensure_detection_tables, predictions
from mfd_assets.detection import PredictionBatchConfig
from mfd_assets.jobs import prediction_job
from mfd_resources import ReadingsStore, Tracking

# A reading waits for this tick after it is loaded: 5 s keeps the stack's reading -> prediction p95 under 40 s
# (docs/operating.md). A tick without new readings is one max(id) query.
INTERVAL_S = 5
LANE_TAG = "mfd/lane"


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
        if not batches:
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
        context.log.info("champion version %s from %s; %d run(s)", version, source, len(batches))
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=batch.run_key,
                    run_config=dg.RunConfig(
                        ops={
                            "prediction_batches": PredictionBatchConfig(
                                first_id=batch.first_id, last_id=batch.last_id
                            ),
                        }
                    ),
                    tags={
                        "mfd/reading_ids": f"{batch.first_id}-{batch.last_id}",
                        "mfd/rows": str(batch.rows),
                        **lane_tags(batch.rows > max_rows_per_run),
                    },
                )
                for batch in batches
            ],
            cursor=after.dumps(),
        )

    return _sensor
