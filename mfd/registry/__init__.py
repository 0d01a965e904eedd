"""Registry: the gated promotion of a candidate to `@champion` in the MLflow model registry, and rollback
(`promotion`, its one entry point `promote_logged`), the gate's pure decision (`gate`) and what is recorded
as tags (`tags`); the one champion loader with its local copy, used by detection and serving (`champion`);
recording the sha256 tags of a version registered before them (`retag`).

In: a registered candidate version and the holdout. Out: the `champion` / `challenger` aliases moved (or not)
with the decision and its reasons; the champion as a FailureModel, from the registry or its local copy."""
