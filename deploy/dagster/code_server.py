"""The stack's code server: `dagster api grpc` whose runs start from a forkserver that has imported the
code location once, instead of a fresh interpreter per run that imports it again.

Dagster's gRPC server starts each run in a `spawn`ed process, which imports `mfd_assets.definitions`
(pandas, sklearn, MLflow, Great Expectations, torch: ~9 s of CPU) before the run is marked started; on the
shared 2-core host that was most of prediction_job's requested -> started delay. A forked child of a
process that imported the location starts in a fraction of a second. The forkserver is a single-threaded
process that imports and computes nothing else, so forking it is safe (no threads, no open connections).

Usage (mfd/services/stack.py runs it): `python deploy/dagster/code_server.py <dagster api grpc options>`.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
import sys

from dagster._cli import main as dagster_main
from dagster._grpc.server import DagsterApiServer

# shap: prediction_batches explains every batch's events and imports it on first use (~0.8 s of CPU).
PRELOAD = ["mfd_assets.definitions", "shap"]


def _forking_runs() -> None:
    """Make every DagsterApiServer start runs from the forkserver; warm it once the location is loaded."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    spawning_init = DagsterApiServer.__init__

    def __init__(self: DagsterApiServer, *args: object, **kwargs: object) -> None:
        spawning_init(self, *args, **kwargs)
        if not hasattr(self, "_mp_ctx"):  # a Dagster upgrade moved it: fail, rather than spawn silently
            raise RuntimeError(
                "DagsterApiServer has no _mp_ctx: deploy/dagster/code_server.py needs updating"
            )
        self._mp_ctx = context
        multiprocessing.forkserver.ensure_running()  # imports PRELOAD now, not at the first run

    DagsterApiServer.__init__ = __init__


if __name__ == "__main__":
    _forking_runs()
    sys.argv = ["dagster", "api", "grpc", *sys.argv[1:]]
    sys.exit(dagster_main())
