"""`mfd champion`: show the registry's versions and the champion, compare the challenger with it (holdout,
shadow predictions, replay), or roll the champion back."""

from __future__ import annotations

import argparse

from mfd.detection.shadow import challenger_version
from mfd.modeling.experiment import tracking_from_settings
from mfd.modeling.model_io import load_model_version
from mfd.plots import table_markdown
from mfd.preparation.labels import label_window
from mfd.registry import promotion as registry
from mfd.registry.replay import replay_models
from mfd.registry.shadow_evidence import shadow_evidence
from mfd.settings import load_settings
from mfd.storage import readings as store


def show(args: argparse.Namespace) -> int:
    settings = load_settings()
    client, _ = tracking_from_settings(settings)
    status = registry.champion_status(client, settings.model_name)
    print(table_markdown(registry.describe(client, settings.model_name)))
    if status.problem:
        print(f"\nWARNING: {status.problem}")
        return 1
    print(
        f"\nchampion: {settings.model_name} version {status.version or 'none'}; "
        f"history: {', '.join(registry.history(client, settings.model_name)) or 'empty'}"
    )
    return 0


def compare(args: argparse.Namespace) -> int:
    settings = load_settings()
    client, _ = tracking_from_settings(settings)
    name = settings.model_name
    challenger = challenger_version(client, name)
    status = registry.champion_status(client, name)
    if challenger is None or status.version is None:
        print(
            f"nothing to compare: {name} has no challenger besides champion version {status.version or 'none'}"
        )
        return 1
    versions = {f"challenger v{challenger}": challenger, f"champion v{status.version}": status.version}
    holdout, which = registry.recorded_holdout(client, name, challenger, status.version)
    print(f"holdout ({which}):")
    print(table_markdown(holdout))
    engine = store.create_engine(settings.readings_url)
    store.ensure_tables(engine)
    window = label_window(args.horizon)
    print("\nshadow (readings both scored):")
    print(table_markdown(shadow_evidence(engine, challenger, window)))
    if args.days > 0:
        models = {row: load_model_version(client, name, v) for row, v in versions.items()}
        replay = replay_models(engine, models, args.days, window)
        print(f"\nreplay of the last {args.days:g} days ({replay.readings} readings, horizon {window}):")
        print(table_markdown(replay.table))
        print(replay.not_worse(*versions)[1])
    return 0


def rollback(args: argparse.Namespace) -> int:
    settings = load_settings()
    client, _ = tracking_from_settings(settings)
    result = registry.rollback(client, settings.model_name)
    skipped = f" (skipped deleted versions {', '.join(result.skipped)})" if result.skipped else ""
    print(f"champion of {settings.model_name}: version {result.from_version} -> {result.to_version}{skipped}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "champion",
        help="show or roll back the champion model in the MLflow registry",
        description="The registered model MFD_MODEL_NAME in MFD_MLFLOW_TRACKING_URI (else the embedded store).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser(
        "show",
        help="versions with aliases, holdout scores and promotion history; "
        "exit 1 if the champion alias is broken",
    ).set_defaults(func=show)
    comparing = actions.add_parser(
        "compare",
        help="challenger vs champion side by side: holdout scores, shadow predictions and a replay of the "
        "last --days of stored readings; exit 1 without a challenger",
    )
    comparing.add_argument(
        "--days", type=float, default=7.0, help="days of readings to replay (0: no replay)"
    )
    comparing.add_argument(
        "--horizon",
        default="2h",
        help="how long before a labelled failure an alert catches it (and the label window)",
    )
    comparing.set_defaults(func=compare)
    actions.add_parser("rollback", help="move `champion` back to the previous champion version").set_defaults(
        func=rollback
    )
