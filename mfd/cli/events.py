"""`mfd events`: the latest failure events as a table."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tabulate import tabulate

from mfd.errors import MfdError
from mfd.settings import load_settings
from mfd.storage.connect import engine_from_settings
from mfd.storage.tables import ensure_detection_tables, failure_events

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_since(text: str) -> timedelta:
    """`30s`, `10m`, `2h`, `1d` -> timedelta; MfdError otherwise."""
    match = _SINCE.match(text)
    if not match or float(match[1]) <= 0:
        raise MfdError(f"--since expects a positive duration like 30s, 10m, 2h or 1d, got {text!r}")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def recent_events(engine: Engine, since: datetime, limit: int) -> pd.DataFrame:
    """Events detected at or after `since`, newest first, at most `limit`."""
    ensure_detection_tables(engine)
    query = (
        sa.select(failure_events)
        .where(failure_events.c.detected_at >= since)
        .order_by(failure_events.c.detected_at.desc(), failure_events.c.reading_id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        df = pd.read_sql(query, conn)
    for col in ("timestamp", "detected_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def _features(text: str) -> str:
    return ", ".join(f"{f['feature']} {f['attribution']:+.2f}" for f in json.loads(text))


def events_table(df: pd.DataFrame) -> str:
    """The events as a plain-text table for a terminal."""
    rows = pd.DataFrame(
        {
            "detected (UTC)": df["detected_at"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": df["machine_id"],
            "reading time (UTC)": df["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "reading": df["reading_id"],
            "probability": df["probability"].round(3),
            "model": df["model_name"] + " v" + df["model_version"],
            "top features (probability drop at healthy median)": df["top_features"].map(_features),
        }
    )
    return tabulate(rows, headers="keys", tablefmt="simple", showindex=False)


def run(args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise MfdError(f"--limit must be positive, got {args.limit}")
    since = datetime.now(UTC) - parse_since(args.since)
    df = recent_events(engine_from_settings(load_settings()), since, args.limit)
    if df.empty:
        print(f"no failure events since {since:%Y-%m-%d %H:%M:%S} UTC")
    else:
        print(events_table(df))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "events",
        help="print the latest predicted failure events",
        description="Failure events detected by prediction_batches, newest first (MFD_DATABASE_URL, "
        "else the embedded SQLite database).",
    )
    parser.add_argument("--since", default="1h", help="how far back: 30s, 10m, 2h, 1d (default 1h)")
    parser.add_argument("--limit", type=int, default=50, help="most events to print (default 50)")
    parser.set_defaults(func=run)
