"""The readings database and the object store as the settings describe them, checked reachable."""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from mfd.errors import MfdError
from mfd.settings import Settings
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, Objects, S3Objects

S3_SETTINGS = "MFD_S3_BUCKET / MFD_S3_ENDPOINT_URL / MFD_S3_ACCESS_KEY_ID / MFD_S3_SECRET_ACCESS_KEY"


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


def objects_from_settings(settings: Settings) -> Objects:
    """S3Objects when MFD_S3_BUCKET is set (endpoint and keys from the settings), else the local directory."""
    if not settings.s3_bucket:
        return LocalObjects(settings.objects_dir)
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.s3_access_key_id,
        aws_secret_access_key=settings.s3_secret_access_key,
        config=Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"}),
    )
    try:
        return S3Objects(client, settings.s3_bucket, settings.s3_prefix)
    except (ClientError, BotoCoreError) as exc:
        raise MfdError(
            f"S3 bucket {settings.s3_bucket!r} is not usable ({exc}); check {S3_SETTINGS}"
        ) from exc
