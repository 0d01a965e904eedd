"""`mfd`: the platform's command line. Each subcommand lives beside the code it runs."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from mfd.errors import MfdError

# Modules that define `register(subparsers)`; each adds one subcommand whose handler is `args.func`.
COMMAND_MODULES: tuple[str, ...] = (
    "mfd.generate_cli",
    "mfd.ingest_cli",
    "mfd.detection.events",
    "mfd.train_cli",
    "mfd.champion_cli",
)


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="mfd",
        description="mfd: machine-failure detection. Settings come from MFD_* environment variables "
        "(see .env.example); with none set, everything runs embedded under .mfd/.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug output")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: runs the subcommand; an MfdError becomes one line on stderr and exit status 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except MfdError as exc:
        print(f"mfd: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
