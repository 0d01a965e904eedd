"""`mfd champion`: show the registry's versions and the champion, or roll the champion back."""

from __future__ import annotations

import argparse

from mfd.modeling.experiment import tracking_from_settings
from mfd.plots import table_markdown
from mfd.registry import promotion as registry
from mfd.settings import load_settings


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
    actions.add_parser("rollback", help="move `champion` back to the previous champion version").set_defaults(
        func=rollback
    )
