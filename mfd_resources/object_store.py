"""`ObjectStore`: where CSV files land. S3/MinIO through dagster-aws, or a local directory twin."""

from __future__ import annotations

from functools import cache

import dagster as dg
from dagster_aws.s3 import S3Resource

from mfd.storage.objects import LocalObjects, Objects, S3Objects


class ObjectStore(dg.ConfigurableResource):
    """Base type assets ask for; `objects()` gives the mfd.storage.objects implementation."""

    def objects(self) -> Objects:
        raise NotImplementedError


class LocalObjectStore(ObjectStore):
    """A local directory laid out like the bucket (incoming/, processed/, rejected/)."""

    root: str

    def objects(self) -> Objects:
        return LocalObjects(self.root)


@cache
def _s3_objects(s3: S3Resource, bucket: str, prefix: str) -> S3Objects:
    return S3Objects(s3.get_client(), bucket, prefix)


class S3ObjectStore(ObjectStore):
    """An S3 bucket (MinIO in production) reached through dagster-aws' S3Resource."""

    s3: S3Resource
    bucket: str
    prefix: str = ""

    def objects(self) -> Objects:
        return _s3_objects(self.s3, self.bucket, self.prefix)
