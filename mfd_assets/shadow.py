"""The shadow challenger beside detection: each prediction_job run also scores its id range with the
`challenger` version (when it is not the champion) into `shadow_predictions`, never into failure events."""

import time

import dagster as dg
from pydantic import Field

from mfd.detection.shadow import challenger_policy, challenger_version, score_shadow
from mfd.modeling.model_io import load_model_version
from mfd_assets.metadata import rounded
from mfd_resources import ReadingsStore, Tracking

GROUP = "detection"


class ShadowConfig(dg.Config):
    first_id: int | None = Field(None, description="First reading id (the prediction batch's); None: skip.")
    last_id: int | None = Field(None, description="Last reading id (the prediction batch's); None: skip.")


@dg.asset(group_name=GROUP, deps=["prediction_batches"], kinds={"sklearn"})
def shadow_predictions(
    context: dg.AssetExecutionContext, config: ShadowConfig, readings_store: ReadingsStore, tracking: Tracking
) -> dg.MaterializeResult:
    """The prediction batch's readings scored by the challenger, keyed by reading and model version. A
    registry that cannot name or load the challenger skips the shadow batch (the champion's stands)."""
    if config.first_id is None or config.last_id is None:
        return dg.MaterializeResult(metadata={"shadowed": False, "reason": "no id range given"})
    start = time.perf_counter()
    try:
        client = tracking.client()
        version = challenger_version(client, tracking.model_name)
        model = load_model_version(client, tracking.model_name, version) if version else None
        policy = challenger_policy(client, tracking.model_name, model) if model is not None else None
    except Exception as exc:  # noqa: BLE001 - the shadow never fails the detection run
        context.log.warning("no shadow batch: %s: %s", type(exc).__name__, exc)
        return dg.MaterializeResult(metadata={"shadowed": False, "reason": f"{type(exc).__name__}: {exc}"})
    if model is None:
        return dg.MaterializeResult(
            metadata={"shadowed": False, "reason": "no challenger besides the champion"}
        )
    result = score_shadow(readings_store.engine, model, config.first_id, config.last_id, policy)
    latency = time.perf_counter() - start
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "shadowed": True,
                "model": f"{model.name} v{model.version}",
                "model_version": model.version,
                "first_id": config.first_id,
                "last_id": config.last_id,
                "rows_scored": result.rows_scored,
                "alerts": result.alerts,
                "latency_s": dg.MetadataValue.float(round(latency, 3)),
                "seconds_by_step": dg.MetadataValue.json({k: round(v, 4) for k, v in result.seconds.items()}),
            }
        )
    )
