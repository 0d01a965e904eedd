"""A two-step job run by tests/e2e/test_two_processes.py: step 1 in one process, step 2 in another.

`python two_steps.py first` runs the job with step 2 failing on purpose; `python two_steps.py retry RUN_ID`
re-executes the failed step from another process, another working directory and another DAGSTER_HOME:
they share only PostgreSQL (the Dagster instance) and S3 (the IO manager). MFD_TEST_IO=filesystem swaps in
Dagster's default filesystem IO manager, which cannot do that.
"""

from __future__ import annotations

import os
import sys

import dagster as dg
import pandas as pd
from dagster_aws.s3 import S3Resource

from mfd_resources import S3ObjectStore
from mfd_resources.io_manager import ObjectStoreIOManager


@dg.asset
def sensor_frame() -> pd.DataFrame:
    """A DataFrame whose dtypes Parquet must keep: categories, tz-aware timestamps, floats, an index."""
    return pd.DataFrame(
        {
            "machine_type": pd.Categorical(["L", "M", "H", "L"]),
            "timestamp": pd.date_range("2026-01-01", periods=4, freq="min", tz="UTC"),
            "torque_nm": [40.5, 41.0, 39.5, 60.25],
        },
        index=pd.Index([10, 11, 12, 13], name="id"),
    )


@dg.asset
def frame_summary(sensor_frame: pd.DataFrame) -> dict:
    """An object that is not a DataFrame (pickled); fails while MFD_TEST_FAIL_SECOND is set."""
    if os.environ.get("MFD_TEST_FAIL_SECOND"):
        raise RuntimeError("second step fails on purpose in the first process")
    return {
        "rows": len(sensor_frame),
        "dtypes": {name: str(dtype) for name, dtype in sensor_frame.dtypes.items()},
        "index": [int(i) for i in sensor_frame.index],
        "pid": os.getpid(),
    }


@dg.asset
def summary_copy(frame_summary: dict) -> dict:
    """Reads the pickled object back."""
    return {**frame_summary, "copied_by": os.getpid()}


def _io_manager() -> dg.IOManagerDefinition | dg.ConfigurableIOManager:
    if os.environ.get("MFD_TEST_IO") == "filesystem":
        return dg.FilesystemIOManager()
    return ObjectStoreIOManager(
        object_store=S3ObjectStore(
            s3=S3Resource(
                endpoint_url=os.environ["MFD_S3_ENDPOINT_URL"],
                aws_access_key_id=os.environ["MFD_S3_ACCESS_KEY_ID"],
                aws_secret_access_key=os.environ["MFD_S3_SECRET_ACCESS_KEY"],
            ),
            bucket=os.environ["MFD_S3_BUCKET"],
            prefix="two-steps/",
        )
    )


# In-process: the test's two processes are the two machines; a subprocess per step would only add imports.
two_steps_job = dg.define_asset_job(
    "two_steps_job",
    selection=["sensor_frame", "frame_summary", "summary_copy"],
    executor_def=dg.in_process_executor,
)
defs = dg.Definitions(
    assets=[sensor_frame, frame_summary, summary_copy],
    jobs=[two_steps_job],
    resources={"io_manager": _io_manager()},
)


def resolved_job() -> dg.JobDefinition:
    return defs.resolve_job_def("two_steps_job")


def main(argv: list[str]) -> int:
    job = dg.reconstructable(resolved_job)
    with dg.DagsterInstance.get() as instance:
        if argv[0] == "first":
            result = dg.execute_job(job, instance)
        else:
            options = dg.ReexecutionOptions.from_failure(argv[1], instance)
            result = dg.execute_job(job, instance, reexecution_options=options)
        print(f"run_id={result.run_id} success={result.success}", flush=True)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
