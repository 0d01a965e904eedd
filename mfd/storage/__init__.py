"""Storage: the readings database (tables, engine, queries), the object store and the MLflow client.

In: URLs and settings. Out: engines with the tables created, `Objects` (S3 or a local directory with the
same prefixes), retried MLflow clients. Every stage reads and writes through here."""
