"""`objects` on one S3 bucket per test module, each test under its own key prefix (or the local twin):
SeaweedFS grows volumes for every new bucket, and a run creating a bucket per test runs out of them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mfd.services import S3Server
from mfd.storage.objects import LocalObjects, S3Objects


def module_bucket(request: pytest.FixtureRequest) -> str:
    """A bucket for the requesting test's module, made once."""
    s3: S3Server = request.getfixturevalue("s3")
    name = f"m-{request.module.__name__.rsplit('.', 1)[-1].replace('_', '-')}-{os.getpid()}"[:63]
    if name not in {b["Name"] for b in s3.client().list_buckets()["Buckets"]}:
        s3.create_bucket(name)
    return name


def prefixed_objects(request: pytest.FixtureRequest, tmp_path: Path) -> LocalObjects | S3Objects:
    """The local twin (param `local`) or the module's bucket under a prefix unique to this test."""
    if request.param == "local":
        return LocalObjects(tmp_path / "objects")
    s3: S3Server = request.getfixturevalue("s3")
    return S3Objects(s3.client(), module_bucket(request), prefix=f"{tmp_path.name}/")
