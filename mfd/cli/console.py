"""`mfd console`: the maintenance console (mfd.console) on a host and port, over the readings database
(MFD_DATABASE_URL, else the embedded SQLite one); actions need a key from MFD_API_KEYS when any is set."""

from __future__ import annotations

import argparse
from datetime import timedelta

from mfd.cli.events import parse_since
from mfd.errors import MfdError
from mfd.settings import load_settings
from mfd.storage.connect import engine_from_settings

DEFAULT_PORT = 3002


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from mfd.console.app import ConsoleConfig, create_app
    from mfd.serving.guards import required_keys

    if not 0 < args.poll <= 5:
        raise MfdError(f"--poll must be in (0, 5] seconds, got {args.poll}")
    settings = load_settings()
    keys = required_keys(settings.deployment, settings.api_keys)
    stale_after: timedelta = parse_since(args.stale_after)
    config = ConsoleConfig(stale_after=stale_after, poll_s=args.poll, api_keys=keys)
    app = create_app(engine_from_settings(settings), config)
    print(f"mfd console on http://{args.host}:{args.port}/ (Ctrl-C stops)", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "console",
        help="serve the maintenance console: fleet risk, alarms and their actions, /metrics",
        description="The maintenance console: every machine's risk and trend, the alarm list with "
        "acknowledge/snooze/resolve, stale machines, and Prometheus metrics at /metrics.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--stale-after",
        default="10m",
        help="a machine silent this long shows as stale: 30s, 10m, 2h (default 10m)",
    )
    parser.add_argument(
        "--poll", type=float, default=3.0, help="seconds between page updates, <= 5 (default 3)"
    )
    parser.set_defaults(func=run)
