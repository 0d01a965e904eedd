"""Dagster resources, one per external system, each with a local twin; chosen by deployment."""

from __future__ import annotations

import dagster as dg
from dagster_aws.s3 import S3Resource

from mfd.settings import Settings
from mfd_resources.object_store import LocalObjectStore, ObjectStore, S3ObjectStore
from mfd_resources.readings_store import ReadingsStore
from mfd_resources.tracking import Tracking

__all__ = ["ObjectStore", "LocalObjectStore", "S3ObjectStore", "ReadingsStore", "Tracking", "resources_for"]


def local_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """Embedded: SQLite readings, a local object directory and an MLflow SQLite store under `.mfd/`."""
    return {
        "readings_store": ReadingsStore(url=settings.readings_url),
        "object_store": LocalObjectStore(root=str(settings.objects_dir)),
        "tracking": Tracking(
            tracking_uri=settings.tracking_uri,
            artifact_location=settings.artifacts_dir.as_uri() if not settings.mlflow_tracking_uri else None,
            model_name=settings.model_name,
        ),
    }


def production_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """PostgreSQL, S3/MinIO and an MLflow server; secrets stay in env vars (dg.EnvVar), never in config."""
    return {
        "readings_store": ReadingsStore(url=dg.EnvVar("MFD_DATABASE_URL")),
        "object_store": S3ObjectStore(
            s3=S3Resource(
                endpoint_url=settings.s3_endpoint_url,
                region_name=settings.s3_region,
                aws_access_key_id=dg.EnvVar("MFD_S3_ACCESS_KEY_ID"),
                aws_secret_access_key=dg.EnvVar("MFD_S3_SECRET_ACCESS_KEY"),
            ),
            bucket=dg.EnvVar("MFD_S3_BUCKET"),
            prefix=settings.s3_prefix,
        ),
        "tracking": Tracking(
            tracking_uri=dg.EnvVar("MFD_MLFLOW_TRACKING_URI"), model_name=settings.model_name
        ),
    }


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """The resource set for `MFD_DEPLOYMENT` (local or production)."""
    return (
        production_resources(settings) if settings.deployment == "production" else local_resources(settings)
    )
