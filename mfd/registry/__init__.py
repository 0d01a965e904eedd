"""Registry: the gated promotion of a candidate to `@champion` in the MLflow model registry, and rollback.

In: a registered candidate version and the holdout. Out: the `champion` / `challenger` aliases moved (or not)
with the decision and its reasons."""
