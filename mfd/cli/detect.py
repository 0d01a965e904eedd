"""`mfd detect`: the command-line twin of `prediction_job`, so a plant without Dagster running can score a
backfill. Every stored reading without a prediction is scored by the champion once, through the same code
path as the prediction sensor and `prediction_batches`: `plan_batches` picks hole-free id ranges of
readings not yet scored, `score_batch` reads, validates, scores and writes each (predictions, failure
events, the alert outbox). The plan starts at the oldest reading without a prediction (ids below it are
all scored); a range spans ids that cannot hold a reading to score, so a reading scored already between
unscored ones (by `mfd stream`, say) is scored again into the same prediction row (upsert). Invalid readings
are counted, never scored; readings arriving meanwhile are scored too, until a plan finds nothing new.
"""

from __future__ import annotations

import argparse
from functools import partial

from mfd.detection.batches import score_batch
from mfd.detection.planning import DetectionCursor, plan_batches, read_snapshot
from mfd.registry.champion import load_champion
from mfd.settings import load_settings
from mfd.storage import readings as store
from mfd.storage import tracking


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = store.create_engine(settings.readings_url)
    store.ensure_tables(engine)
    champion = load_champion(
        settings.tracking_uri,
        settings.model_name,
        partial(tracking.connect, settings.tracking_uri),
        settings.home,
    )
    if champion.fallback:
        print(f"registry failed ({champion.registry_error}): scoring with the local copy")
    first = read_snapshot(engine, 0, 1).ids  # the oldest reading without a prediction
    cursor = DetectionCursor(settled=first[0] - 1 if first else 0)
    batches, scored, read, failures, invalid = 0, 0, 0, 0, 0
    while True:
        ranges, cursor = plan_batches(engine, cursor, args.batch_rows, 1)
        if not ranges:
            break
        for batch in ranges:
            result = score_batch(engine, champion.model, batch.first_id, batch.last_id, champion.policy)
            batches += 1
            read += result.rows_read
            scored += result.rows_scored
            failures += result.failures
            invalid += result.invalid_rows
            if not args.quiet:
                print(f"  ids {batch.first_id}-{batch.last_id}: {result.rows_scored} scored")
    model = champion.model
    print(
        f"scored {scored} readings with {model.name} version {model.version} in {batches} batches: "
        f"{failures} predicted failures, {invalid} invalid readings not scored (of {read} read)"
    )
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="score every stored reading not yet scored with the champion, once",
        description="The CLI twin of prediction_job: the readings in MFD_DATABASE_URL (else the embedded "
        "store) without a prediction, scored by the champion of MFD_MODEL_NAME in the registry.",
    )
    parser.add_argument(
        "--batch-rows",
        type=int,
        default=load_settings().prediction_batch_rows,
        help="most readings scored per batch (default MFD_PREDICTION_BATCH_ROWS)",
    )
    parser.add_argument("--quiet", action="store_true", help="print only the summary")
    parser.set_defaults(func=run)
