"""Every job of the code location: asset jobs over the graph, and the two op jobs that move the champion
alias (their ops live with the training assets)."""

from __future__ import annotations

import dagster as dg

from mfd_assets.training import move_champion_back, promote_shadowed_challenger

# Detection runs every few seconds: one process per run, no subprocess per step (the location default too).
prediction_job = dg.define_asset_job(
    "prediction_job",
    selection=dg.AssetSelection.assets("prediction_batches", "shadow_predictions", "alarms"),
    executor_def=dg.in_process_executor,
    description="Score one id range of readings with the champion, and with the challenger in the shadow "
    "(requested by prediction_sensor); then open or bump the machines' alarms.",
)
drift_job = dg.define_asset_job("drift_job", selection=dg.AssetSelection.assets("drift_report"))
observe_readings_job = dg.define_asset_job(
    "observe_readings_job",
    selection=dg.AssetSelection.assets("readings", "readings_stream"),
    description="Observe the readings table (row count, max id) and the MQTT stream: `make run` does after "
    "ingesting.",
)

champion_bento_job = dg.define_asset_job(
    "champion_bento_job",
    selection=dg.AssetSelection.assets("champion_bento"),
    description="Build the BentoML bento for a new champion (requested by champion_changed_sensor).",
)

# One run per incoming file (a partition), requested by incoming_files_sensor.
ingest_readings_job = dg.define_asset_job(
    "ingest_readings_job",
    selection=dg.AssetSelection.assets("raw_readings"),
    description="Load one incoming readings CSV (a raw_readings partition) and run its expectations.",
)
ingest_peripheral_job = dg.define_asset_job(
    "ingest_peripheral_job",
    selection=dg.AssetSelection.assets("peripheral_readings"),
    description="Load one incoming peripheral-device CSV (a peripheral_readings partition).",
)

# Training: a tuned candidate from the chosen training set, then the gated champion promotion.
training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("candidate_model", "champion_model"),
    description="Train a candidate model, log it to MLflow, and promote it to champion if it is better.",
)

# `make run`: everything between ingestion and detection, in dependency order.
main_job = dg.define_asset_job(
    "main_job",
    selection=dg.AssetSelection.groups("preparation", "augmentation", "quality", "training", "serving"),
    description="Prepare, augment, score the classifier panel, train, promote and package the champion.",
)

# Requested by the sensors of mfd_sensors.
retraining_job = dg.define_asset_job(
    "retraining_job",
    selection=dg.AssetSelection.assets(
        "training_set", "cleaned_set", "holdout", "candidate_model", "champion_model"
    ),
    description="training_job on a fresh training set (readings and maintenance labels as they are now): "
    "requested by retraining_sensor, tagged mfd/trigger=drift|labels|schedule.",
)
maintenance_job = dg.define_asset_job(
    "maintenance_job",
    selection=dg.AssetSelection.assets("maintenance_records"),
    description="Check and store the maintenance records waiting under incoming/maintenance/.",
)
alert_delivery_job = dg.define_asset_job(
    "alert_delivery_job",
    selection=dg.AssetSelection.assets("alert_deliveries"),
    executor_def=dg.in_process_executor,
    description="Post the due failure alerts of the outbox to the configured webhooks.",
)


@dg.job(description="Promote the shadowed challenger if its shadow evidence passes the shadow gate.")
def promote_challenger() -> None:
    promote_shadowed_challenger()


@dg.job(description="Roll the champion back to the previous champion version in the MLflow registry.")
def rollback_champion() -> None:
    move_champion_back()


JOBS: list[dg.UnresolvedAssetJobDefinition | dg.JobDefinition] = [
    prediction_job,
    drift_job,
    observe_readings_job,
    ingest_readings_job,
    ingest_peripheral_job,
    champion_bento_job,
    training_job,
    rollback_champion,
    promote_challenger,
    main_job,
]
