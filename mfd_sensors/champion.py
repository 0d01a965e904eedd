"""`champion_changed_sensor`: a new champion version triggers `champion_bento` and the service's reload."""

import dagster as dg

from mfd.errors import MfdError
from mfd.modeling.model_io import CHAMPION
from mfd.serving.client import request_reload
from mfd.serving.guards import parse_keys
from mfd.settings import Settings
from mfd_assets.jobs import champion_bento_job
from mfd_resources import Tracking


def build_champion_changed_sensor(settings: Settings) -> dg.SensorDefinition:
    """The sensor; `settings.service_url` (MFD_SERVICE_URL) set means the running service is reloaded too."""

    @dg.sensor(
        name="champion_changed_sensor",
        job=champion_bento_job,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Cursor = champion version; a new one requests champion_bento and POSTs /reload.",
    )
    def _sensor(context: dg.SensorEvaluationContext, tracking: Tracking) -> dg.SensorResult | dg.SkipReason:
        try:
            version = str(tracking.client().get_model_version_by_alias(tracking.model_name, CHAMPION).version)
        except Exception as exc:  # noqa: BLE001 - no registry or no champion yet: nothing to do this tick
            return dg.SkipReason(f"no {tracking.model_name}@{CHAMPION}: {type(exc).__name__}: {exc}")
        if version == context.cursor:
            return dg.SkipReason(f"champion is still version {version}")
        if version == _bento_version(context.instance):
            # `make run` (or a run launched by hand) built it already: reload the service, build nothing.
            _reload(context)
            return dg.SensorResult(
                skip_reason=f"champion_bento holds version {version} already", cursor=version
            )
        _reload(context)
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"champion-{tracking.model_name}-v{version}", tags={"mfd/champion": version}
                )
            ],
            cursor=version,
        )

    def _reload(context: dg.SensorEvaluationContext) -> None:
        if not settings.service_url:
            return
        keys = parse_keys(settings.api_keys)
        try:
            status = request_reload(settings.service_url, keys[0] if keys else None)
            context.log.info("service now serves version %s", status.get("model_version"))
        except MfdError as exc:
            context.log.warning(str(exc))

    return _sensor


def _bento_version(instance: dg.DagsterInstance) -> str | None:
    """The model version champion_bento's latest materialization packaged, if any."""
    event = instance.get_latest_materialization_event(dg.AssetKey("champion_bento"))
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get("model_version")
    return None if value is None else str(value.value)
