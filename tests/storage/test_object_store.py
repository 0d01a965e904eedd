"""Object store behaviour on a real S3 server (SeaweedFS) and on the local-directory twin, same body."""

from __future__ import annotations

import pytest

from mfd.errors import ServiceUnavailable
from mfd.storage.objects import INCOMING, PROCESSED, ObjectMissing, Objects, S3Objects


def test_put_list_get_move(objects: Objects) -> None:
    objects.put(f"{INCOMING}a.csv", b"a,b\n1,2\n")
    objects.put(f"{INCOMING}sub/b.csv", b"x\n")
    listed = objects.list(INCOMING)
    assert sorted(o.key for o in listed) == [f"{INCOMING}a.csv", f"{INCOMING}sub/b.csv"]
    assert {o.key: o.size for o in listed}[f"{INCOMING}a.csv"] == 8
    assert objects.get(f"{INCOMING}a.csv") == b"a,b\n1,2\n"
    objects.move(f"{INCOMING}a.csv", f"{PROCESSED}a.csv")
    assert not objects.exists(f"{INCOMING}a.csv") and objects.exists(f"{PROCESSED}a.csv")
    assert [o.key for o in objects.list(INCOMING)] == [f"{INCOMING}sub/b.csv"]


def test_etag_names_the_version_and_listing_reads_no_byte(objects: Objects) -> None:
    """S3: the MD5 of a single-part upload. Local: the file's inode, size and modification time, so a
    listing costs a `stat`, never a checksum."""
    import hashlib

    objects.put("incoming/x.csv", b"hello")
    first = objects.list("incoming/")[0].etag
    assert objects.list("incoming/")[0].etag == first
    if isinstance(objects, S3Objects):
        assert first == hashlib.md5(b"hello").hexdigest()
    objects.put("incoming/x.csv", b"hello, again")
    assert objects.list("incoming/")[0].etag != first


def test_dot_files_are_files_like_any_other(objects: Objects) -> None:
    objects.put(f"{INCOMING}.hidden.csv", b"a\n")
    objects.put(f"{INCOMING}sub/.also.csv", b"b\n")
    assert sorted(o.key for o in objects.list(INCOMING)) == [
        f"{INCOMING}.hidden.csv",
        f"{INCOMING}sub/.also.csv",
    ]


def test_since_filters_by_last_modified(objects: Objects) -> None:
    objects.put("incoming/old.csv", b"1")
    first = objects.list("incoming/")[0]
    assert objects.list("incoming/", since=first.last_modified) == []


def test_missing_object_is_a_clear_error(objects: Objects) -> None:
    with pytest.raises(ObjectMissing, match="gone.csv"):
        objects.get("incoming/gone.csv")
    with pytest.raises(ObjectMissing, match="gone.csv"):
        objects.move("incoming/gone.csv", "processed/gone.csv")


def test_unreachable_s3_names_the_setting() -> None:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url="http://127.0.0.1:1",
        aws_access_key_id="a",
        aws_secret_access_key="b",
        region_name="us-east-1",
    )
    with pytest.raises(ServiceUnavailable, match="MFD_S3_ENDPOINT_URL"):
        S3Objects(client, "nothing")
