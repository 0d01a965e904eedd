"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

# Detection runs every 30 s: one process per run, no subprocess per step.
prediction_job = dg.define_asset_job(
    "prediction_job",
    selection=dg.AssetSelection.assets("prediction_batches"),
    executor_def=dg.in_process_executor,
    description="Score one id range of readings with the champion (requested by prediction_sensor).",
)
drift_job = dg.define_asset_job("drift_job", selection=dg.AssetSelection.assets("drift_report"))

JOBS: list[dg.UnresolvedAssetJobDefinition] = [prediction_job, drift_job]
