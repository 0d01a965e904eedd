"""The mfd code location with dagster-k8s' `k8s_job_executor`: under the K8sRunLauncher (values.yaml) each
step of a run then runs in its own pod instead of the run pod's subprocesses. Steps share inputs and
outputs through the S3 IO manager. Point the user-code deployment at it with
`dagsterApiGrpcArgs: ["--python-file", "deploy/k8s/definitions.py"]` to use it."""

import dagster as dg
from dagster_k8s import k8s_job_executor

from mfd_assets.definitions import defs as mfd_defs

executor = k8s_job_executor.configured({"max_concurrent": 4, "env_secrets": ["mfd-env"]}, name="k8s")

# mfd_assets.definitions sets its own default executor (in-process): the same definitions with this one.
defs = dg.Definitions(
    assets=mfd_defs.assets,
    asset_checks=mfd_defs.asset_checks,
    jobs=mfd_defs.jobs,
    sensors=mfd_defs.sensors,
    schedules=mfd_defs.schedules,
    resources=mfd_defs.resources,
    loggers=mfd_defs.loggers,
    executor=executor,
)
