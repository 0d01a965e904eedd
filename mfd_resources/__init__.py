"""Dagster resources, one per external system, each with a local twin; chosen from settings in one place."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from mfd.settings import Settings
from mfd.storage.connect import S3_SECRET_VARIABLES, s3_target
from mfd_resources.alerts import AlertWebhooks
from mfd_resources.object_store import LocalObjectStore, ObjectStore, S3ObjectStore
from mfd_resources.readings_store import ReadingsStore
from mfd_resources.tracking import Tracking

__all__ = [
    "AlertWebhooks",
    "ObjectStore",
    "LocalObjectStore",
    "S3ObjectStore",
    "ReadingsStore",
    "Tracking",
    "resources_for",
]


def _object_store(settings: Settings) -> ObjectStore:
    target = s3_target(settings)
    if target is None:
        return LocalObjectStore(root=str(settings.objects_dir))
    # Secrets stay in the environment (dg.EnvVar): the UI shows the variable name, never the value.
    return S3ObjectStore(
        s3=S3Resource(
            endpoint_url=target.endpoint_url,
            region_name=target.region_name,
            max_attempts=target.max_attempts,
            **{key: dg.EnvVar(S3_SECRET_VARIABLES[key]) for key in target.secrets},
        ),
        bucket=target.bucket,
        prefix=target.prefix,
    )


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Each service's production form where its MFD_* setting is given, else its embedded twin.

    `MFD_DEPLOYMENT=production` insists that every production setting is given.
    """
    settings.check_deployment()
    # A URL given in the environment may carry a password: it reaches the resource as a dg.EnvVar, so run
    # config snapshots and the UI show the variable name, never the value. The embedded defaults hold none.
    return {
        "readings_store": ReadingsStore(
            url=dg.EnvVar("MFD_DATABASE_URL") if settings.database_url else settings.readings_url,
            conflict_policy=settings.conflict_policy,
            timestamp_min=settings.timestamp_min.isoformat(),
            timestamp_max_ahead_s=settings.timestamp_max_ahead.total_seconds(),
            max_file_bytes=settings.max_file_bytes,
        ),
        "object_store": _object_store(settings),
        "tracking": Tracking(
            tracking_uri=dg.EnvVar("MFD_MLFLOW_TRACKING_URI")
            if settings.mlflow_tracking_uri
            else settings.tracking_uri,
            artifact_location=None if settings.mlflow_tracking_uri else settings.artifacts_dir.as_uri(),
            model_name=settings.model_name,
            home=str(settings.home),
            service_url=settings.service_url,
        ),
        "alert_webhooks": AlertWebhooks(
            webhook_urls=dg.EnvVar("MFD_WEBHOOK_URLS") if settings.webhook_urls else "",
            slack_webhook_urls=dg.EnvVar("MFD_SLACK_WEBHOOK_URLS") if settings.slack_webhook_urls else "",
            dedup_window_s=settings.alert_dedup_window_s,
            timeout_s=settings.webhook_timeout_s,
        ),
    }
