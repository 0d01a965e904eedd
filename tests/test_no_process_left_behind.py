"""The end-of-session check finds a process the suite started even after its parent died (reparented to init)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import SESSION_MARKER, stray_processes

from mfd.services import stop_process_group
from mfd.services.processes import group_members


def test_an_orphaned_grandchild_is_found_by_its_session_marker() -> None:
    marker = f"{SESSION_MARKER}={os.environ[SESSION_MARKER]}"
    launched = subprocess.run(
        ["bash", "-c", "setsid sleep 300 >/dev/null 2>&1 & echo $!"],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(launched.stdout)
    try:
        parent = int(Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert parent != os.getpid()  # its bash is gone: not a descendant any more
        assert "sleep 300" in stray_processes(os.getpid(), marker).get(orphan, "")
        assert orphan not in stray_processes(os.getpid(), f"{SESSION_MARKER}=another-session")
    finally:
        os.kill(orphan, signal.SIGKILL)
    for _ in range(50):
        if orphan not in stray_processes(os.getpid(), marker):
            break
        time.sleep(0.1)
    assert orphan not in stray_processes(os.getpid(), marker)


def test_stopping_a_group_waits_for_and_kills_a_child_that_outlives_its_leader() -> None:
    # The leader exits on SIGTERM; its child ignores it (as a code server that keeps running would).
    script = 'bash -c "trap \\"\\" TERM; sleep 300" & sleep 0.5; echo started; wait'
    proc = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "started"
    assert len(group_members(proc.pid)) >= 2
    stop_process_group(proc, timeout=3)
    assert group_members(proc.pid) == []
