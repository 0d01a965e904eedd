"""Detection: prediction batches scored by the champion as prediction_sensor requests them (a tick every
5 s), and by the challenger in the same pass into shadow predictions; their alerts delivered to the
webhooks, and drift of recent readings."""

import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field
from sqlalchemy.exc import SQLAlchemyError

from mfd.alarms import update_alarms
from mfd.alarms.model import DEFAULT_DEBOUNCE
from mfd.alerts.outbox import deliver_due, outbox_status
from mfd.detection.batches import BatchResult, score_batch
from mfd.detection.coverage import Unscored, unscored_readings
from mfd.detection.drift import drift_figure, drift_table, read_recent, reference_for_drift
from mfd.detection.shadow import Challenger, load_challenger
from mfd.errors import one_line
from mfd.plots import png_markdown, table_markdown
from mfd.registry.champion import LoadedChampion, NoChampion, load_champion
from mfd_assets.metadata import rounded
from mfd_assets.metadata import table as table_metadata
from mfd_resources import AlertWebhooks, ReadingsStore, Tracking

GROUP = "detection"


class PredictionBatchConfig(dg.Config):
    first_id: int = Field(description="First reading id of the batch (inclusive).")
    last_id: int = Field(description="Last reading id of the batch (inclusive).")
    max_invalid_share: float = Field(0.01, description="The valid_readings check warns above this share.")
    unscored_after_minutes: float = Field(
        10.0,
        description="every_reading_scored fails on valid readings older than this with no prediction.",
        gt=0,
    )
    unscored_lookback_hours: float = Field(
        24.0, description="How far back (before unscored_after_minutes) every_reading_scored looks.", gt=0
    )


class DriftConfig(dg.Config):
    recent_rows: int = Field(5000, description="Newest valid readings compared with the reference.", gt=0)
    min_rows: int = Field(200, description="Fewer valid recent readings than this fail the asset.", gt=0)
    psi_threshold: float = Field(0.2, description="A feature drifts when its PSI exceeds this.")
    ks_threshold: float = Field(0.1, description="A feature drifts when its KS statistic exceeds this.")


@dg.multi_asset(
    group_name=GROUP,
    specs=[
        dg.AssetSpec(
            "prediction_batches",
            deps=["readings"],
            kinds={"sklearn"},
            description="Readings of one id range scored by the champion into `predictions`; predicted "
            "failures, explained, into `failure_events` and the alert outbox. Re-runs upsert.",
        ),
        dg.AssetSpec(
            "shadow_predictions",
            deps=["readings"],
            kinds={"sklearn"},
            skippable=True,
            description="The batch's readings scored by the `challenger` version (when it is not the "
            "champion) in the same pass, keyed by reading and model version; never failure events.",
        ),
    ],
    retry_policy=dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL),
    check_specs=[
        dg.AssetCheckSpec("valid_readings", asset="prediction_batches"),
        dg.AssetCheckSpec(
            "every_reading_scored",
            asset="prediction_batches",
            description="No valid reading older than unscored_after_minutes is left without a prediction.",
        ),
    ],
)
def prediction_batches(
    context: dg.AssetExecutionContext,
    config: PredictionBatchConfig,
    readings_store: ReadingsStore,
    tracking: Tracking,
) -> Iterator[dg.MaterializeResult]:
    """The readings with first_id <= id <= last_id scored by the champion into `predictions`; predicted
    failures also into `failure_events`. Invalid readings are counted, never scored. Re-runs upsert. A
    challenger scores the same validated frame into `shadow_predictions` in the same transaction; a
    registry that cannot name or load it skips the shadow (the champion's batch stands)."""
    if config.first_id > config.last_id:
        raise dg.Failure(f"first_id {config.first_id} > last_id {config.last_id}", allow_retries=False)
    start = time.perf_counter()
    champion = _champion(context, tracking)
    scored_by = _scored_by(context, tracking)
    challenger = None if champion.fallback else _challenger(context, tracking)  # fallback: registry down
    result = score_batch(
        readings_store.engine,
        champion.model,
        config.first_id,
        config.last_id,
        champion.policy,
        challenger=challenger,
    )
    latency = time.perf_counter() - start
    taken = _take_into_alarms(context, readings_store, result)
    unscored = unscored_readings(
        readings_store.engine,
        timedelta(minutes=config.unscored_after_minutes),
        timedelta(hours=config.unscored_lookback_hours),
    )
    yield dg.MaterializeResult(
        asset_key="prediction_batches",
        metadata={**_batch_metadata(config, result, champion, scored_by, latency), **taken},
        check_results=[_valid_readings(config, result), _every_reading_scored(config, unscored)],
    )
    if result.shadow is not None and result.shadow.error:
        context.log.warning(
            "no shadow batch: challenger v%s could not score: %s",
            result.shadow.model_version,
            result.shadow.error,
        )
    elif result.shadow is not None:
        yield _shadow_result(config, result)


def _take_into_alarms(
    context: dg.AssetExecutionContext, readings_store: ReadingsStore, result: BatchResult
) -> dict[str, Any]:
    """The batch's scored readings into `machine_risk` and `alarms` from the frame in memory (the `alarms`
    step after it then reads nothing back). When this fails (two runs opening one machine's first alarm at
    once), the `alarms` step takes the batch with its retries: logged, never the batch's failure."""
    known = {k: float(v) for k, v in result.thresholds.items() if k != "all"}
    try:
        report = update_alarms(
            readings_store.engine, result.scored, debounce=DEFAULT_DEBOUNCE, thresholds=known or None
        )
    except SQLAlchemyError as exc:
        context.log.warning("alarms left to the alarms step: %s", one_line(exc))
        return {"alarms": "left to the alarms step"}
    return {
        "alarms_opened": report.opened,
        "alarms_bumped": report.bumped,
        "alarm_crossings": report.crossings,
    }


def _champion(context: dg.AssetExecutionContext, tracking: Tracking) -> LoadedChampion:
    """The champion from the registry, or its local copy when the registry fails (logged); a Failure
    without retries when there is none."""
    try:
        champion = load_champion(
            tracking.tracking_uri, tracking.model_name, tracking.client, tracking.local_home
        )
    except NoChampion as exc:
        raise dg.Failure(str(exc), allow_retries=False) from exc
    if champion.fallback:
        context.log.warning("registry failed (%s): scoring with the local copy", champion.registry_error)
    return champion


def _scored_by(context: dg.AssetExecutionContext, tracking: Tracking) -> str:
    """Where the batch is scored: in-process, and whether the champion's service is down (logged)."""
    service_down = tracking.service_down()
    if not service_down:
        return "in-process"
    context.log.warning(
        "the champion's service at %s does not answer (%s): detection goes on in-process",
        tracking.service_url,
        service_down,
    )
    return f"in-process (service at {tracking.service_url} down)"


def _batch_metadata(
    config: PredictionBatchConfig,
    result: BatchResult,
    champion: LoadedChampion,
    scored_by: str,
    latency: float,
) -> dict[str, Any]:
    """prediction_batches' metadata: the range, the counts, the model and where it came from, the speed,
    the thresholds and expected costs, the first failure events."""
    return rounded(
        {
            "first_id": config.first_id,
            "last_id": config.last_id,
            "rows_read": result.rows_read,
            "rows_scored": result.rows_scored,
            "failures": result.failures,
            "invalid_rows": result.invalid_rows,
            "model": f"{result.model_name} v{result.model_version}",
            "model_version": result.model_version,
            "model_source": champion.source,
            "registry_fallback": champion.fallback,
            "registry_error": champion.registry_error or "",
            "scored_by": scored_by,
            "latency_s": dg.MetadataValue.float(round(latency, 3)),
            "rows_per_s": dg.MetadataValue.float(round(result.rows_scored / latency, 1) if latency else 0.0),
            "seconds_by_step": dg.MetadataValue.json({k: round(v, 4) for k, v in result.seconds.items()}),
            "thresholds_by_machine_type": dg.MetadataValue.json(
                result.thresholds or {"all": champion.model.threshold}
            ),
            **{name: dg.MetadataValue.float(round(value, 2)) for name, value in result.costs.items()},
            "expected_costs": dg.MetadataValue.md(_cost_table(result.costs)),
            "failure_events": table_metadata(result.events.head(20)),
        }
    )


def _valid_readings(config: PredictionBatchConfig, result: BatchResult) -> dg.AssetCheckResult:
    """Warns when the batch's share of invalid readings passes max_invalid_share."""
    invalid_share = result.invalid_rows / result.rows_read if result.rows_read else 0.0
    invalid = pd.Series(result.invalid, name="readings").rename_axis("reason").to_frame()
    return dg.AssetCheckResult(
        check_name="valid_readings",
        passed=invalid_share <= config.max_invalid_share,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "invalid_rows": result.invalid_rows,
            "invalid_share": dg.MetadataValue.float(round(invalid_share, 6)),
            "by_reason": table_metadata(invalid),
            "first_invalid_ids": dg.MetadataValue.json(result.invalid_ids[:20]),
        },
    )


def _every_reading_scored(config: PredictionBatchConfig, unscored: Unscored) -> dg.AssetCheckResult:
    """Fails when valid readings older than unscored_after_minutes have no prediction."""
    return dg.AssetCheckResult(
        check_name="every_reading_scored",
        passed=unscored.count == 0,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{unscored.count} valid readings from {unscored.since:%Y-%m-%d %H:%M} to "
        f"{unscored.until:%Y-%m-%d %H:%M} UTC have no prediction",
        metadata={
            "unscored_readings": unscored.count,
            "first_unscored_ids": dg.MetadataValue.json(unscored.first_ids),
            "older_than_minutes": config.unscored_after_minutes,
        },
    )


def _shadow_result(config: PredictionBatchConfig, result: BatchResult) -> dg.MaterializeResult:
    """shadow_predictions of the batch: the challenger's version, the range, what it scored and alerted."""
    shadow = result.shadow
    return dg.MaterializeResult(
        asset_key="shadow_predictions",
        metadata={
            "model": f"{shadow.model_name} v{shadow.model_version}",
            "model_version": shadow.model_version,
            "first_id": config.first_id,
            "last_id": config.last_id,
            "rows_scored": shadow.rows_scored,
            "alerts": shadow.alerts,
            "score_s": dg.MetadataValue.float(round(result.seconds.get("shadow", 0.0), 3)),
        },
    )


def _challenger(context: dg.AssetExecutionContext, tracking: Tracking) -> Challenger | None:
    """The challenger to shadow, None when there is none or the registry cannot give it (logged)."""
    try:
        return load_challenger(tracking.client(), tracking.model_name)
    except Exception as exc:  # noqa: BLE001 - the shadow never fails the detection run
        context.log.warning("no shadow batch: %s: %s", type(exc).__name__, exc)
        return None


def _cost_table(costs: dict[str, float]) -> str:
    if not costs:
        return "no readings scored"
    rows = pd.DataFrame(
        {
            "expected cost": [
                costs["expected_cost_model"],
                costs["expected_cost_no_model"],
                costs["expected_cost_rules"],
            ],
            "avoided by the model": [
                0.0,
                costs["cost_avoided_vs_no_model"],
                costs["cost_avoided_vs_rules"],
            ],
        },
        index=["model (thresholds per type)", "no model (never alarm)", "alarm on every rule hit"],
    )
    return table_markdown(rows.round(2))


class AlertDeliveryConfig(dg.Config):
    max_alerts: int = Field(500, description="Most due alerts one run posts.", gt=0)


@dg.asset(group_name=GROUP, deps=["prediction_batches"], kinds={"python"})
def alert_deliveries(
    config: AlertDeliveryConfig, readings_store: ReadingsStore, alert_webhooks: AlertWebhooks
) -> dg.MaterializeResult:
    """One delivery pass over the alert outbox: due alerts posted to the configured webhooks (JSON and
    Slack), a machine's repeats within the dedup window suppressed, failures kept pending with a backoff.
    Runs apart from prediction_batches, so a slow or dead webhook never delays detection."""
    report = deliver_due(
        readings_store.engine,
        alert_webhooks.targets(),
        window=alert_webhooks.window,
        timeout=alert_webhooks.timeout_s,
        limit=config.max_alerts,
    )
    status = outbox_status(readings_store.engine)
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "delivered": report.delivered,
                "suppressed": report.suppressed,
                "failed": report.failed,
                "errors": dg.MetadataValue.json(sorted(set(report.errors))[:20]),
                "outbox_by_status": dg.MetadataValue.json(status),
                "pending": status.get("pending", 0),
                "summary": report.line(),
            }
        )
    )


@dg.asset(group_name=GROUP, deps=["readings"], kinds={"pandas"})
def drift_report(config: DriftConfig, readings_store: ReadingsStore) -> dg.Output[pd.DataFrame]:
    """PSI and KS statistic per feature of the newest valid readings against the plant's reference data
    (AI4I 2020 for `ai4i`; else its oldest stored readings); features past a threshold are marked drifted."""
    recent = read_recent(readings_store.engine, config.recent_rows)
    if len(recent) < config.min_rows:
        raise dg.Failure(f"drift_report needs at least {config.min_rows} valid readings, found {len(recent)}")
    reference, described = reference_for_drift(readings_store.engine, config.recent_rows)
    table = drift_table(reference, recent, config.psi_threshold, config.ks_threshold)
    return dg.Output(
        table,
        metadata=rounded(
            {
                "recent_rows": len(recent),
                "recent_ids": f"{recent['id'].min()}..{recent['id'].max()}",
                "reference": described,
                "drifted_features": dg.MetadataValue.json(table.index[table["drifted"]].tolist()),
                "max_psi": dg.MetadataValue.float(round(float(table["psi"].max()), 4)),
                "psi_threshold": config.psi_threshold,
                "ks_threshold": config.ks_threshold,
                "drift": table_metadata(table),
                "histograms": dg.MetadataValue.md(
                    png_markdown(drift_figure(reference, recent, table), "reference vs recent")
                ),
            }
        ),
    )


@dg.asset_check(asset=drift_report)
def drift_within_thresholds(drift_report: pd.DataFrame) -> dg.AssetCheckResult:
    """Warns when any feature's PSI or KS statistic passed its threshold."""
    drifted = drift_report[drift_report["drifted"]]
    return dg.AssetCheckResult(
        passed=drifted.empty,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"drift in {', '.join(drifted.index)}" if len(drifted) else "no feature drifted",
        metadata=rounded(
            {
                "drifted_features": dg.MetadataValue.json(drifted.index.tolist()),
                "max_psi": dg.MetadataValue.float(round(float(drift_report["psi"].max()), 4)),
                "max_ks_statistic": dg.MetadataValue.float(
                    round(float(drift_report["ks_statistic"].max()), 4)
                ),
            }
        ),
    )
