"""The readings database and the object store as the settings describe them, checked reachable."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from mfd.errors import MfdError
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, Objects, S3Objects

S3_SETTINGS = "MFD_S3_BUCKET / MFD_S3_ENDPOINT_URL / MFD_S3_ACCESS_KEY_ID / MFD_S3_SECRET_ACCESS_KEY"
# The environment variable behind each S3 secret, by S3 client keyword.
S3_SECRET_VARIABLES: dict[str, str] = {
    "aws_access_key_id": "MFD_S3_ACCESS_KEY_ID",
    "aws_secret_access_key": "MFD_S3_SECRET_ACCESS_KEY",
}


def engine_from_settings(
    settings: Settings, url: str | None = None, setting: str = "MFD_DATABASE_URL"
) -> Engine:
    """Engine of the readings database (`url`, else MFD_DATABASE_URL, else SQLite under MFD_HOME), tables
    created; raises MfdError naming `setting` when the URL is malformed or the server does not answer."""
    url = url or settings.readings_url
    try:
        engine = store.create_engine(url)
    except (ArgumentError, ValueError) as exc:
        raise MfdError(
            f"{setting} is not a valid SQLAlchemy URL ({exc}), e.g. postgresql://user:pw@host/db"
        ) from exc
    except ModuleNotFoundError as exc:
        raise MfdError(f"{setting} names a driver that is not installed ({exc.name})") from exc
    store.ensure_tables(engine, setting=setting)
    return engine


@dataclass(frozen=True)
class S3Target:
    """The bucket the settings name and how a client reaches it: the one place that configures S3 clients
    (`mfd_resources` wraps the same target in dagster-aws' S3Resource, its secrets as environment variables)."""

    bucket: str
    prefix: str
    endpoint_url: str | None
    region_name: str
    secrets: dict[str, str] = field(repr=False)
    max_attempts: int = 2

    def client(self) -> Any:
        """A boto3 S3 client: short connect timeout, `max_attempts` standard retries."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region_name,
            **self.secrets,
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": self.max_attempts, "mode": "standard"},
            ),
        )


def s3_target(settings: Settings) -> S3Target | None:
    """The S3 bucket when MFD_S3_BUCKET is set, else None (the local directory `settings.objects_dir`).
    `secrets` holds only the keys that are set, by S3 client keyword (see S3_SECRET_VARIABLES)."""
    if not settings.s3_bucket:
        return None
    given = {
        "aws_access_key_id": settings.s3_access_key_id,
        "aws_secret_access_key": settings.s3_secret_access_key,
    }
    return S3Target(
        bucket=settings.s3_bucket,
        prefix=settings.s3_prefix,
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        secrets={k: v for k, v in given.items() if v},
    )


def objects_from_settings(settings: Settings) -> Objects:
    """S3Objects when MFD_S3_BUCKET is set (see `s3_target`), else the local directory."""
    target = s3_target(settings)
    if target is None:
        return LocalObjects(settings.objects_dir)
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return S3Objects(target.client(), target.bucket, target.prefix)
    except (ClientError, BotoCoreError) as exc:
        raise MfdError(f"S3 bucket {target.bucket!r} is not usable ({exc}); check {S3_SETTINGS}") from exc
