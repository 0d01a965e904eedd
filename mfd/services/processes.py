"""Process plumbing shared by the services: free ports, readiness polling, stopping a process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mfd.errors import MfdError


def free_port(limit: int = 50000) -> int:
    """A free TCP port on 127.0.0.1 below `limit` (SeaweedFS puts gRPC at port + 10000)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < limit:
            return port


def wait_until(check: Callable[[], bool], what: str, timeout: float = 60.0, log: Path | None = None) -> None:
    """Poll `check` until it is true, or fail naming the service and the tail of its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise MfdError(f"{what} did not start within {timeout:.0f}s\n{tail}")


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid` (psutil)."""
    import psutil

    members = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):  # gone meanwhile
            continue
    return members


def stop_process_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    """Send `sig` to the process group of `proc` (started with start_new_session=True) and wait for the whole
    group, not only `proc`: a child (dagster's code server) can outlive its parent. Whatever of the group is
    still alive after `timeout` seconds gets SIGKILL."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)
    while group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if group_members(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = time.monotonic() + 5  # SIGKILL is delivered at once, the exit takes a moment
    while group_members(proc.pid) and time.monotonic() < killed:
        time.sleep(0.05)
