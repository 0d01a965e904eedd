"""Start `dagster-webserver` or `dagster-daemon` once the code server answers, its own imports done while
the code server is still loading the location (a few seconds of CPU each, on the other core).

Usage (mfd/services/stack.py runs it): `python deploy/dagster/after_code_server.py <host:port> <command>
<its arguments>`, e.g. `... 127.0.0.1:4266 dagster-daemon run -w workspace.yaml`.
"""

from __future__ import annotations

import importlib
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ENTRY_POINTS = {"dagster-webserver": "dagster_webserver.cli", "dagster-daemon": "dagster._daemon.cli"}
TIMEOUT_S = 900.0  # the code location's imports on a busy machine


def code_server_serving(address: str) -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="DagsterApi"), timeout=2
            )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def main() -> int:
    address, command, *args = sys.argv[1:]
    cli = importlib.import_module(ENTRY_POINTS[command])
    deadline = time.monotonic() + TIMEOUT_S
    while not code_server_serving(address):
        if time.monotonic() > deadline:
            print(f"code server at {address} not serving within {TIMEOUT_S:.0f}s", file=sys.stderr)
            return 1
        time.sleep(0.2)
    sys.argv = [command, *args]
    return cli.main()


if __name__ == "__main__":
    sys.exit(main())
