"""Promotion after a shadow period: `shadow_promotion_sensor` requests `promote_challenger` when a
challenger that won on the holdout against today's champion has shadowed enough readings for the shadow
gate, and again each time its evidence doubles (`min_readings`, 2x, 4x, ...), so a challenger the gate
turned down is judged again on more evidence, a bounded number of times. The gate decides
(`mfd.registry.promotion.promote_challenger`)."""

from __future__ import annotations

import dagster as dg

from mfd.registry.promotion import awaiting_shadow_verdict
from mfd.registry.shadow_evidence import ShadowGate, shadowed_readings
from mfd_assets.jobs import promote_challenger
from mfd_resources import ReadingsStore, Tracking
from mfd_sensors.retraining import TRIGGER_TAG


def evidence_step(readings: int, min_readings: int) -> int | None:
    """The largest min_readings * 2**k the shadowed `readings` reached (None below min_readings)."""
    if readings < min_readings:
        return None
    step = min_readings
    while step * 2 <= readings:
        step *= 2
    return step


def build_shadow_promotion_sensor(
    min_readings: int = ShadowGate.min_readings, name: str = "shadow_promotion_sensor"
) -> dg.SensorDefinition:
    """The sensor; `min_readings` is also the gate's evidence bar in the run it requests."""

    @dg.sensor(
        name=name,
        job=promote_challenger,
        minimum_interval_seconds=600,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests promote_challenger when the challenger has shadowed {min_readings} "
        "readings, and again each time that evidence doubles.",
    )
    def _sensor(
        context: dg.SensorEvaluationContext, readings_store: ReadingsStore, tracking: Tracking
    ) -> dg.RunRequest | dg.SkipReason:
        try:
            version = awaiting_shadow_verdict(tracking.client(), tracking.model_name)
        except Exception as exc:  # noqa: BLE001 - a registry down skips this tick, the next one retries
            return dg.SkipReason(f"registry at {tracking.tracking_uri}: {type(exc).__name__}: {exc}")
        if version is None:
            return dg.SkipReason(
                "no challenger awaits a shadow verdict (none, it is the champion, or it lost on the "
                "holdout against today's champion)"
            )
        readings = shadowed_readings(readings_store.engine, version)
        step = evidence_step(readings, min_readings)
        if step is None:
            return dg.SkipReason(
                f"challenger v{version} has shadowed {readings} of the {min_readings} readings the gate needs"
            )
        context.log.info("challenger v%s: %d shadowed readings, judged at %d", version, readings, step)
        return dg.RunRequest(
            run_key=f"promote-v{version}-{step}",
            run_config={
                "ops": {"promote_shadowed_challenger": {"config": {"shadow_min_readings": min_readings}}}
            },
            tags={TRIGGER_TAG: "shadow", "mfd/challenger": version, "mfd/shadowed_readings": str(readings)},
        )

    return _sensor
