"""Object storage for incoming CSV files: an S3/MinIO bucket or a local directory with the same behaviour.

Moves are safe against a new version uploaded meanwhile: `move(src, dst, etag)` copies only the version
that was read (`open_version`) and deletes the source only while it is still that version (S3: `CopyObject`
with `CopySourceIfMatch`, `DeleteObject` with `IfMatch`; local: a hard link checked against the ETag, and
the source unlinked only while it is still the linked inode). The local store never follows a symbolic
link: listing skips them, opening refuses them. One module over 300 lines: the two stores implement one
protocol and are kept side by side so their behaviour stays the same.

Files in flight: an S3 put is atomic (a listed object is whole); its `settle` of 2 s only lets the
one-second LastModified pass, so a later upload can never sort before what was handed out. A local file is
written in place by whoever copies it in, so its ETag is its identity and state (inode, size, modification
time: `stat` only, no checksum, so a listing costs the same whatever the files hold), `settle` says how long
it must have stayed unchanged before it is read, and a local read that reaches the end checks that the file
is still the version it opened (`ObjectChanged` otherwise: nothing from it may be kept). Dot-files are
files like any other on both stores; only the local store's own in-flight files (`*.mfd-partial` while a
put is written, `*.moving` while a move links) are never listed.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from mfd.errors import MfdError, with_retries
from mfd.storage.pause import pause_point

# The bucket's layout: new files arrive under incoming/ (peripheral-device files under
# incoming/peripheral/), and are filed under processed/ or rejected/ once ingested.
INCOMING = "incoming/"
PERIPHERAL_PREFIX = f"{INCOMING}peripheral/"
PROCESSED = "processed/"
REJECTED = "rejected/"
MAX_KEY_BYTES = 1024  # S3's limit on a key
# Room left after an archived name for what is filed beside it (`.reason.json`, `.conflicts.csv`, ...).
_BESIDE = len(".bad_rows.csv") + 1
_MAX_NAME_BYTES = 255 - _BESIDE - 16  # a path component on common file systems, minus a temporary prefix

PARTIAL, MOVING = ".mfd-partial", ".moving"  # the local store's own files in flight: never listed
LOCAL_SETTLE = timedelta(seconds=5)  # one listing interval of incoming_files_sensor
S3_SETTLE = timedelta(seconds=2)

log = logging.getLogger(__name__)


class ObjectMissing(MfdError):
    """The object was deleted (or never existed) between listing and reading."""


class ObjectChanged(MfdError):
    """The object is no longer the version that was read: a newer one was uploaded under its key."""


class ObjectRefused(MfdError):
    """The local store refuses the key: a symbolic link (never followed) or not a regular file."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    last_modified: datetime
    etag: str
    size: int


class Objects(Protocol):
    """What every object store offers; keys are relative to the store's root/prefix. `settle`: how long an
    object must have stayed unchanged before it is read (zero where a put is atomic)."""

    settle: timedelta

    def list(self, prefix: str, since: datetime | None = None) -> list[ObjectInfo]: ...
    def open(self, key: str) -> IO[bytes]: ...
    def open_version(self, key: str) -> tuple[IO[bytes], str]: ...
    def get(self, key: str) -> bytes: ...
    def put(self, key: str, data: bytes) -> None: ...
    def upload(self, key: str, path: Path) -> None: ...
    def move(self, src: str, dst: str, etag: str | None = None) -> None: ...
    def delete(self, key: str) -> None: ...
    def exists(self, key: str) -> bool: ...
    def describe(self) -> str: ...


def archive_key(key: str, folder: str, etag: str) -> str:
    """Where version `etag` of `incoming/<name>` is filed: `<folder><name>` with `@<etag>` before `.csv`
    (`processed/a@<etag>.csv`), so a corrected file never overwrites the archived one. A name too long
    for S3 or a file system once versioned is shortened in the middle (the version stays whole)."""
    name = key[len(INCOMING) :] if key.startswith(INCOMING) else key
    parent, _, base = name.rpartition("/")
    stem, ext = (base[:-4], base[-4:]) if base.lower().endswith(".csv") else (base, "")
    tag = f"@{etag}{ext}"
    room = min(_MAX_NAME_BYTES, MAX_KEY_BYTES - _BESIDE - len(f"{folder}{parent}/".encode())) - len(
        tag.encode()
    )
    if len(stem.encode()) > room:
        stem = stem.encode()[: max(room - 1, 0)].decode(errors="ignore") + "~"
    return f"{folder}{parent}/{stem}{tag}" if parent else f"{folder}{stem}{tag}"


def stat_etag(info: os.stat_result) -> str:
    """A local file's version: its inode, size and modification time in hex (no byte of it read)."""
    return f"{info.st_ino:x}-{info.st_size:x}-{info.st_mtime_ns:x}"


class _CheckedRead:
    """A local file read to its end, checked there: still the version (`etag`) it was when opened, and every
    byte of it read. Raises ObjectChanged otherwise (it was being written, appended or truncated)."""

    def __init__(self, fh: IO[bytes], key: str, etag: str) -> None:
        self.fh, self.key, self.etag = fh, key, etag
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self.fh.read(size)
        self.read_bytes += len(data)
        if not data or size < 0:
            now = os.fstat(self.fh.fileno())
            if stat_etag(now) != self.etag or now.st_size != self.read_bytes:
                raise ObjectChanged(
                    f"{self.key} changed while it was read ({self.read_bytes:,} bytes read, {now.st_size:,} "
                    "there now: still being written?): nothing from it is kept; it stays in incoming/ and is "
                    "read again"
                )
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        self.read_bytes = offset if whence == 0 and offset == 0 else self.read_bytes
        return self.fh.seek(offset, whence)

    def close(self) -> None:
        self.fh.close()

    def __enter__(self) -> _CheckedRead:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalObjects:
    """A directory laid out like the bucket; ETag = `stat_etag` (the file's identity and state)."""

    settle = LOCAL_SETTLE

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        """The file of `key`; a key leaving the root, or passing through a symbolic link, is refused."""
        parts = PurePosixPath(key).parts
        if key.startswith("/") or ".." in parts:
            raise MfdError(f"object key {key!r} escapes the store root {self.root}")
        path = self.root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise ObjectRefused(
                    f"{key} is refused: {path} is a symbolic link, and {self.describe()} never follows links"
                )
        return path

    def describe(self) -> str:
        return f"local directory {self.root}"

    def list(self, prefix: str, since: datetime | None = None) -> list[ObjectInfo]:
        """The files under `prefix`, oldest first. `last_modified` is the later of the modification and the
        status-change time: a file copied in keeping an old modification time (`cp -p`, rsync) or moved in
        (`mv`) counts from when it arrived. One `stat` per file (`os.scandir`), no byte read."""
        base = self._path(prefix) if prefix else self.root
        if not base.is_dir():
            return []
        root = len(str(self.root)) + 1
        out = []
        for path, info in self._files(str(base)):
            modified = datetime.fromtimestamp(max(info.st_mtime, info.st_ctime), tz=UTC)
            if since is not None and modified <= since:
                continue
            key = path[root:].replace(os.sep, "/")
            out.append(ObjectInfo(key, modified, stat_etag(info), info.st_size))
        return sorted(out, key=lambda o: (o.last_modified, o.key))

    def _files(self, base: str) -> Iterator[tuple[str, os.stat_result]]:
        """Regular files under `base` with their `stat`, dot-files included, this store's own in-flight files
        aside; symbolic links are skipped, never followed."""
        folders = [base]
        while folders:
            try:
                entries = list(os.scandir(folders.pop()))
            except FileNotFoundError:
                continue  # removed while listing
            for entry in entries:
                if entry.is_symlink():
                    log.warning(
                        "skipped %s in %s: a symbolic link, never followed", entry.path, self.describe()
                    )
                elif entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                elif not entry.name.endswith((PARTIAL, MOVING)):
                    try:
                        info = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted while listing
                    if stat.S_ISREG(info.st_mode):
                        yield entry.path, info

    def _open(self, path: Path) -> IO[bytes]:
        """`path` for reading, refusing a symbolic link (`O_NOFOLLOW`) or anything but a regular file."""
        key = path.relative_to(self.root).as_posix()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{key} is no longer in {self.describe()}") from exc
        except OSError as exc:
            if path.is_symlink():
                raise ObjectRefused(
                    f"{key} is refused: a symbolic link, and {self.describe()} never follows links"
                ) from exc
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ObjectRefused(f"{key} is refused: not a regular file in {self.describe()}")
        return os.fdopen(fd, "rb")

    def open(self, key: str) -> IO[bytes]:
        return self._open(self._path(key))

    def open_version(self, key: str) -> tuple[IO[bytes], str]:
        """The object and its ETag when opened; reading it to the end raises ObjectChanged if the file is
        then no longer that version, or was not read whole."""
        fh = self.open(key)
        etag = stat_etag(os.fstat(fh.fileno()))
        return _CheckedRead(fh, key, etag), etag  # type: ignore[return-value]

    def get(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}{PARTIAL}")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def upload(self, key: str, path: Path) -> None:
        dst = self._path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(f".{dst.name}{PARTIAL}")
        shutil.copyfile(path, tmp)
        os.replace(tmp, dst)

    def move(self, src: str, dst: str, etag: str | None = None) -> None:
        """Move `src` to `dst`. With `etag`, only that version: raises ObjectChanged (nothing filed, nothing
        deleted) when `src` holds other content, and leaves `src` in place when it is replaced after the
        copy. The window left: between the final inode check and the unlink (microseconds; POSIX has no
        conditional unlink)."""
        source, target = self._path(src), self._path(dst)
        target.parent.mkdir(parents=True, exist_ok=True)
        if etag is None:
            try:
                os.replace(source, target)
            except FileNotFoundError as exc:
                raise ObjectMissing(f"{src} is no longer in {self.describe()}") from exc
            return
        link = target.with_name(f".{target.name}.{os.getpid()}{MOVING}")
        try:
            os.link(source, link, follow_symlinks=False)  # this inode stays what is filed
        except FileNotFoundError as exc:
            raise ObjectMissing(f"{src} is no longer in {self.describe()}") from exc
        try:
            with self._open(link) as fh:
                linked = os.fstat(fh.fileno())
                if stat_etag(linked) != etag:
                    raise ObjectChanged(f"{src} changed after it was read (ETag {etag}): nothing moved")
            os.replace(link, target)
        finally:
            link.unlink(missing_ok=True)
        pause_point("move_copied")
        try:
            now = os.stat(source, follow_symlinks=False)
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) == (linked.st_dev, linked.st_ino):
            source.unlink()
        else:
            log.warning("%s was replaced after it was read: the new version stays for the next run", src)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        try:
            path = self._path(key)
        except ObjectRefused:
            return False
        return path.is_file() and not path.is_symlink()


class S3Objects:
    """An S3 bucket (MinIO, SeaweedFS, AWS) through a boto3 client, keys under an optional prefix."""

    # A put is atomic (a listed object is whole), but LastModified has one-second resolution: an object
    # whose second has passed (plus a second for clock skew) cannot be joined by a later one at or before it.
    settle = S3_SETTLE

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

    def open_version(self, key: str) -> tuple[IO[bytes], str]:
        """The object and the ETag of the version this GET returns."""
        try:
            got = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectMissing(f"{key} is no longer in {self.describe()}") from exc
            raise
        return got["Body"], got["ETag"].strip('"')

    def get(self, key: str) -> bytes:
        return self.open(key).read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def upload(self, key: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(key))

    def move(self, src: str, dst: str, etag: str | None = None) -> None:
        """Copy then delete. With `etag`, both are conditional on it (`CopySourceIfMatch`, `IfMatch`): a
        newer version under `src` is neither filed (ObjectChanged) nor deleted (it stays for the next run)."""
        only = {"CopySourceIfMatch": f'"{etag}"'} if etag else {}
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(dst),
                CopySource={"Bucket": self.bucket, "Key": self._key(src)},
                **only,
            )
        except self.client.exceptions.ClientError as exc:
            if self._not_found(exc):
                raise ObjectMissing(f"{src} is no longer in {self.describe()}") from exc
            if self._precondition_failed(exc):
                raise ObjectChanged(f"{src} changed after it was read (ETag {etag}): nothing moved") from exc
            raise
        pause_point("move_copied")
        try:
            self.client.delete_object(
                Bucket=self.bucket, Key=self._key(src), **({"IfMatch": f'"{etag}"'} if etag else {})
            )
        except self.client.exceptions.ClientError as exc:
            if not self._precondition_failed(exc):
                raise
            log.warning("%s was replaced after it was read: the new version stays for the next run", src)

    def _precondition_failed(self, exc: Exception) -> bool:
        return getattr(exc, "response", {}).get("Error", {}).get("Code") in ("PreconditionFailed", "412")

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
