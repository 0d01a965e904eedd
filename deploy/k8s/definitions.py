"""The mfd code location with dagster-k8s' `k8s_job_executor`: under the K8sRunLauncher (values.yaml) each
step of a run then runs in its own pod instead of the run pod's subprocesses. Steps share inputs and
outputs through the S3 IO manager. Point the user-code deployment at it with
`dagsterApiGrpcArgs: ["--python-file", "deploy/k8s/definitions.py"]` to use it."""

from dagster_k8s import k8s_job_executor

from mfd_assets.definitions import with_executor

executor = k8s_job_executor.configured({"max_concurrent": 4, "env_secrets": ["mfd-env"]}, name="k8s")

defs = with_executor(executor)
