"""Sequence models on per-machine windows: windows -> torch nets -> scores -> one MLflow run each.

In: readings with machine ids and timestamps. Out: per-family results (scores, latency, curves) and runs."""
