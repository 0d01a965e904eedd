"""Named pause points for crash tests: with `MFD_PAUSE_AT=<name>` set, a process reaching that point says so
on stderr and sleeps until it is killed, so a test can SIGKILL it at a known moment of a real load. Unset
(always, outside those tests) it costs one environment lookup."""

from __future__ import annotations

import os
import sys
import time

ENV = "MFD_PAUSE_AT"


def pause_point(name: str) -> None:
    """Stop here for good when `MFD_PAUSE_AT` names this point (see the module docstring)."""
    if os.environ.get(ENV) == name:
        print(f"{ENV}: paused at {name}", file=sys.stderr, flush=True)
        while True:
            time.sleep(3600)
