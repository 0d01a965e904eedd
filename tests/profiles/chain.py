"""One plant profile's whole chain in one process (the profile is per process: `MFD_PROFILE`): readings into
incoming/, `mfd ingest`, then maintenance_records -> training_set -> holdout -> candidate_model ->
champion_model -> prediction_batches materialized with the code location's own resources, then `/predict`'s
code path (request validation by the profile's source names, the champion as the service loads it).
Prints one JSON line of what each step produced; tests/profiles/test_chain.py asserts on it.

Run: MFD_PROFILE=<profile> MFD_HOME=<dir> python tests/profiles/chain.py <source>
  source: `generate` (the profile's generator) or `cmapss` (the vendored FD001 train split).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import sqlalchemy as sa

from mfd.cli import main as cli
from mfd.schema import PROFILE, READING_COLUMNS, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.serving.champion import Champion
from mfd.serving.readings import parse_readings
from mfd.storage import readings as store
from mfd.storage.tables import failure_events, predictions

TRAINING = (
    "maintenance_records",
    "training_set",
    "cleaned_set",
    "holdout",
    "candidate_model",
    "champion_model",
)
DETECTION = ("prediction_batches", "shadow_predictions")


def produce(source: str) -> None:
    """The readings files (and failure records) under incoming/."""
    if source == "cmapss":
        argv = ["import", "cmapss", "--subset", "FD001", "--split", "train"]
    else:
        argv = ["generate", "--machines", "12", "--rows", "6000", "--sink", "files", "--quiet"]
        argv += ["--maintenance"] if PROFILE.failure_records and not PROFILE.label_column else []
    status = cli.main(argv)
    if status:
        raise SystemExit(f"mfd {' '.join(argv)} exited {status}")
    status = cli.main(["ingest"])
    if status not in (0, 1):
        raise SystemExit(f"mfd ingest exited {status}")


def materialize(selection: tuple[str, ...], ops: dict[str, object]) -> dict[str, dict[str, object]]:
    """Materialize `selection` with the code location's assets, checks and resources."""
    from mfd_assets.definitions import defs

    assets = [a for a in defs.assets if isinstance(a, dg.AssetsDefinition)]
    result = dg.materialize(
        [*assets, *defs.asset_checks],
        selection=dg.AssetSelection.assets(*selection),
        resources=defs.resources,
        run_config={"ops": ops},
    )
    out = {}
    for name in selection:
        events = result.asset_materializations_for_node(name)
        out[name] = {k: _plain(v.value) for k, v in events[-1].metadata.items()} if events else {}
    return out


def _plain(value: object) -> object:
    return value if isinstance(value, int | float | str | bool) or value is None else str(value)[:200]


def predict_requests(engine: sa.Engine) -> list[dict[str, object]]:
    """Three stored readings sent as a client would: the profile's source names, through the champion."""
    frame = store.read_readings(engine, limit=3)
    columns = [c for c in READING_COLUMNS if c in (SEGMENT_COLUMN, *SENSOR_COLUMNS)]
    body = [
        {PROFILE.source_name(c): (str(v) if c == SEGMENT_COLUMN else float(v)) for c, v in row.items()}
        for row in frame[columns].to_dict("records")
    ]
    from mfd_assets.definitions import settings

    champion = Champion(settings.tracking_uri, settings.model_name, settings.home)
    served = champion.start()
    return {"request": body, "answers": served.predict(parse_readings(body, 100))}


def main(source: str) -> None:
    produce(source)
    from mfd_assets.definitions import defs

    engine = defs.resources["readings_store"].engine
    metadata = materialize(
        TRAINING,
        {
            "candidate_model": {"config": {"family": "hgb", "folds": 2, "trials": 1}},
            "champion_model": {"config": {"margin": 0.0}},
        },
    )
    last_id = store.max_reading_id(engine)
    metadata |= materialize(
        DETECTION, {"prediction_batches": {"config": {"first_id": 1, "last_id": last_id}}}
    )
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(store.readings)).scalar()
        scored = conn.execute(sa.select(sa.func.count()).select_from(predictions)).scalar()
        events = conn.execute(sa.select(sa.func.count()).select_from(failure_events)).scalar()
        probability = conn.execute(sa.select(predictions.c.probability)).scalars().all()
    served = predict_requests(engine)
    print(
        "CHAIN "
        + json.dumps(
            {
                "profile": PROFILE.name,
                "stored": stored,
                "scored": scored,
                "failure_events": events,
                "probability_range": [float(np.min(probability)), float(np.max(probability))],
                "metadata": metadata,
                "predict": served,
            },
            default=str,
        )
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1] if len(sys.argv) > 1 else "generate")
