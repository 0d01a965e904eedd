"""`mfd train`: the `candidate_model` training outside Dagster, logged to the same MLflow experiment."""

from __future__ import annotations

import argparse

import pandas as pd

from mfd.cli.progress import log_progress
from mfd.errors import MfdError
from mfd.modeling.candidate import train_candidate
from mfd.modeling.experiment import log_candidate, run_url, tracking_from_settings
from mfd.modeling.families import FAMILY_CHOICES
from mfd.modeling.metrics import METRICS
from mfd.modeling.training_data import data_version
from mfd.plots import table_markdown
from mfd.profiles.physics import reference_readings
from mfd.registry.promotion import promote_logged
from mfd.schema import PROFILE
from mfd.settings import load_settings
from mfd.storage import readings as store
from mfd.storage.connect import engine_from_settings

DATA_SOURCES: tuple[str, ...] = ("ai4i", "db")


def _training_data(source: str) -> pd.DataFrame:
    if source == "ai4i":
        reference = reference_readings()
        if reference is None:
            raise MfdError(f"profile {PROFILE.name} has no reference data set: use --data db")
        return reference
    df = store.read_readings(engine_from_settings(load_settings()))
    if df.empty:
        raise MfdError("the readings table is empty: load readings first (mfd generate) or use --data ai4i")
    return df


def check_options(args: argparse.Namespace) -> None:
    """An MfdError naming the option to fix."""
    if args.folds < 2:
        raise MfdError(f"--folds must be at least 2 (stratified cross-validation), got {args.folds}")
    if args.trials < 1:
        raise MfdError(f"--trials must be at least 1, got {args.trials}")
    if args.budget is not None and args.budget <= 0:
        raise MfdError(f"--budget must be a positive number of seconds, got {args.budget}")
    if args.margin < 0:
        raise MfdError(f"--margin must be 0 or more, got {args.margin}")


def train(args: argparse.Namespace) -> int:
    check_options(args)
    settings = load_settings()
    client, experiment_id = tracking_from_settings(settings)  # fail fast when MLflow is unreachable
    df = _training_data(args.data)
    print(
        f"training {args.family} on {len(df):,} rows ({args.data}): {args.trials} trials x {args.folds} folds",
        flush=True,
    )
    with log_progress("mfd.modeling", unit="trial"):
        candidate = train_candidate(
            df,
            family=args.family,
            folds=args.folds,
            trials=args.trials,
            seed=args.seed,
            time_budget_s=args.budget,
        )
    logged = log_candidate(
        candidate,
        experiment_id=experiment_id,
        settings={
            "family": args.family,
            "folds": args.folds,
            "trials": args.trials,
            "seed": args.seed,
            "training_data": args.data,
        },
        tags={"training_set": args.data, "training_set_version": data_version(df), "source": "mfd train"},
    )
    print(f"by family (CV on the tuning rows):\n{table_markdown(candidate.families)}\n")
    print(
        f"{candidate.family} on the holdout: "
        + ", ".join(f"{k} {v:.4f}" for k, v in candidate.holdout_scores.items())
    )
    early = {**candidate.lead_scores, **candidate.rul_scores}
    if early:
        print(
            f"early warning on the holdout machines (selected by {candidate.selected_by}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in early.items())
        )
    print(
        f"latency: {candidate.latency['latency_row_ms']:.3f} ms/row (batch of one), "
        f"{candidate.latency['latency_10k_ms']:.1f} ms per 10k rows; trained in {candidate.seconds:.1f} s"
    )
    print(f"MLflow run: {run_url(settings.tracking_uri, experiment_id, logged.run_id)}")
    if args.register:
        decision = promote_logged(client, settings.model_name, logged, metric=args.metric, margin=args.margin)
        print(f"registered {settings.model_name} version {decision.challenger}: {decision.reason}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a candidate model (optuna + stratified k-fold), log it to MLflow, optionally register it",
        description="Train the model family (or `auto`: every family, the best kept) on AI4I or the readings "
        "table, score it on a holdout the tuning never saw, and log the run to MLflow "
        "(MFD_MLFLOW_TRACKING_URI, else the embedded store under .mfd/).",
    )
    parser.add_argument(
        "--family", choices=FAMILY_CHOICES, default="auto", help="model family (default auto)"
    )
    parser.add_argument("--folds", type=int, default=5, help="stratified CV folds per trial (default 5)")
    parser.add_argument("--trials", type=int, default=5, help="optuna trials per family (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of splits, optuna and models (default 0)")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="wall-time budget of the candidate in seconds, 60 %% of it for tuning (candidate_model's "
        "time_budget_s, 60 there; default: none, every trial runs)",
    )
    parser.add_argument(
        "--data",
        choices=DATA_SOURCES,
        default="ai4i",
        help="ai4i: the vendored AI4I 2020 file; db: the labelled rows of the readings table",
    )
    parser.add_argument(
        "--register",
        action="store_true",
        help="register the model as a new version and promote it to champion if it is better",
    )
    parser.add_argument(
        "--metric", choices=METRICS, default="pr_auc", help="promotion metric (default pr_auc)"
    )
    parser.add_argument("--margin", type=float, default=0.005, help="promotion margin (default 0.005)")
    parser.set_defaults(func=train)
