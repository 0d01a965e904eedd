"""`mfd`: the platform's command line. Each subcommand lives beside the code it runs."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from mfd.errors import MfdError
from mfd.profiles import active

# Subcommand -> (module defining `register(subparsers)`, one-line help). Only the module of the command
# being run is imported, so `mfd --help` and light commands do not pay for torch or scikit-learn.
COMMANDS: dict[str, tuple[str, str]] = {
    "generate": (
        "mfd.cli.generate",
        "simulate a fleet of machines: readings into the database and/or CSV files under incoming/",
    ),
    "ingest": ("mfd.cli.ingest", "load the CSV files under incoming/ into the readings database"),
    "events": ("mfd.cli.events", "print the latest predicted failure events"),
    "train": ("mfd.cli.train", "train a candidate model, log it to MLflow, optionally register it"),
    "champion": ("mfd.cli.champion", "show or roll back the champion model in the MLflow registry"),
    "detect": ("mfd.cli.detect", "score every stored reading not yet scored with the champion, once"),
    "profile": ("mfd.cli.profile", "check a plant profile (print its rule table) or list shipped ones"),
    "import": ("mfd.cli.importer", "convert NASA C-MAPSS text files into readings CSVs under incoming/"),
    "console": (
        "mfd.cli.console",
        "serve the maintenance console: fleet risk, alarms and their actions, /metrics",
    ),
    "stream": (
        "mfd.cli.stream",
        "consume readings from an MQTT broker: validate, store and score each micro-batch",
    ),
    "partitions": (
        "mfd.cli.partitions",
        "readings partitioned by month: sync, list, archive old months to Parquet in the bucket, restore",
    ),
}


def _version() -> str:
    try:
        return version("mfd")
    except PackageNotFoundError:  # a checkout on sys.path, not installed
        return "unknown (not installed)"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full options of `command` (every command's when None)."""
    parser = argparse.ArgumentParser(
        prog="mfd",
        description="mfd: machine-failure detection. Settings come from MFD_* environment variables "
        "(see .env.example); with none set, everything runs embedded under .mfd/.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, summary) in COMMANDS.items():
        if command in (None, name):
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


class _KnownNoise(logging.Filter):
    """MLflow lines a user cannot act on: schema upgrades of the embedded store, and the pickle warning
    (mfd pickles on purpose and checks each version's sha256 before unpickling; see README)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (record.name == "mlflow.store.db.utils" or "skops" in message or "Pickle" in message)


def quiet_mlflow() -> None:
    """Drop MLflow's lines a user cannot act on (also used by `make run`)."""
    for name in ("mlflow.store.db.utils", "mlflow.sklearn", "mlflow.pytorch"):
        logging.getLogger(name).addFilter(_KnownNoise())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: runs the subcommand; an MfdError becomes one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # Dagster refuses a relative DAGSTER_HOME; whatever mfd starts gets the absolute path.
    if os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = os.path.abspath(os.environ["DAGSTER_HOME"])
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    try:
        if command not in (None, "profile"):  # `mfd profile check PATH` checks any profile
            active()  # a bad MFD_PROFILE: one line naming the key, before any command module binds to it
    except MfdError as exc:
        print(f"mfd: error: {exc}", file=sys.stderr)
        return 2
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(message)s")
    for handler in logging.getLogger().handlers:  # a library logger set to INFO prints nothing here either
        handler.setLevel(level)
    if not args.verbose:
        quiet_mlflow()
    try:
        return int(args.func(args) or 0)
    except MfdError as exc:
        print(f"mfd: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
