"""Object storage for incoming CSV files: an S3/MinIO bucket or a local directory with the same behaviour."""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Protocol

from mfd.errors import MfdError, with_retries

# The bucket's layout: new files arrive under incoming/ (peripheral-device files under
# incoming/peripheral/), and are filed under processed/ or rejected/ once ingested.
INCOMING = "incoming/"
PERIPHERAL_PREFIX = f"{INCOMING}peripheral/"
PROCESSED = "processed/"
REJECTED = "rejected/"


class ObjectMissing(MfdError):
    """The object was deleted (or never existed) between listing and reading."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    last_modified: datetime
    etag: str
    size: int


class Objects(Protocol):
    """What every object store offers; keys are relative to the store's root/prefix."""

    def list(self, prefix: str, since: datetime | None = None) -> list[ObjectInfo]: ...
    def open(self, key: str) -> IO[bytes]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def upload(self, key: str, path: Path) -> None: ...
    def move(self, src: str, dst: str) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def describe(self) -> str: ...


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class LocalObjects:
    """A directory laid out like the bucket; ETag = MD5 of the content, as S3 does for single-part uploads."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise MfdError(f"object key {key!r} escapes the store root {self.root}")
        return path

    def describe(self) -> str:
        return f"local directory {self.root}"

    def list(self, prefix: str, since: datetime | None = None) -> list[ObjectInfo]:
        base = self._path(prefix) if prefix else self.root
        if not base.exists():
            return []
        out = []
        for path in sorted(p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")):
            try:
                stat = path.stat()
                modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
                if since is not None and modified <= since:
                    continue
                out.append(
                    ObjectInfo(path.relative_to(self.root).as_posix(), modified, _md5(path), stat.st_size)
                )
            except FileNotFoundError:
                continue  # deleted while listing
        return sorted(out, key=lambda o: (o.last_modified, o.key))

    def open(self, key: str) -> IO[bytes]:
        try:
            return self._path(key).open("rb")
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{key} is no longer in {self.describe()}") from exc

    def get(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def upload(self, key: str, path: Path) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}.tmp")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)

    def move(self, src: str, dst: str) -> None:
        target = self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(self._path(src), target)
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{src} is no longer in {self.describe()}") from exc

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()


class S3Objects:
    """An S3 bucket (MinIO, SeaweedFS, AWS) through a boto3 client, keys under an optional prefix."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", check: bool = True) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        if check:
            self._ensure_bucket()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.client.meta.endpoint_url}"

    def _ensure_bucket(self) -> None:
        from botocore.exceptions import ClientError, EndpointConnectionError

        def head() -> None:
            try:
                self.client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                    raise MfdError(
                        f"bucket {self.bucket!r} does not exist; create it or set MFD_S3_BUCKET"
                    ) from exc
                raise

        with_retries(
            head,
            what=f"S3 endpoint {self.client.meta.endpoint_url}",
            setting="MFD_S3_ENDPOINT_URL / MFD_S3_ACCESS_KEY_ID / MFD_S3_SECRET_ACCESS_KEY",
            retry_on=(EndpointConnectionError, ConnectionError),
        )

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def list(self, prefix: str, since: datetime | None = None) -> list[ObjectInfo]:
        out = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        for page in pages:
            for obj in page.get("Contents", []):
                modified = obj["LastModified"].astimezone(UTC)
                if since is not None and modified <= since:
                    continue
                key = obj["Key"][len(self.prefix) :]
                out.append(ObjectInfo(key, modified, obj["ETag"].strip('"'), int(obj["Size"])))
        return sorted(out, key=lambda o: (o.last_modified, o.key))

    def _not_found(self, exc: Exception) -> bool:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        return code in ("NoSuchKey", "404", "NotFound")

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectMissing(f"{key} is no longer in {self.describe()}") from exc
            raise

    def get(self, key: str) -> bytes:
        return self.open(key).read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def move(self, src: str, dst: str) -> None:
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(dst),
                CopySource={"Bucket": self.bucket, "Key": self._key(src)},
            )
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectMissing(f"{src} is no longer in {self.describe()}") from exc
            raise
        self.client.delete_object(Bucket=self.bucket, Key=self._key(src))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                return False
            raise
