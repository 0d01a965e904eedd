"""`mfd events`: the latest failure events as a table, with their explanation (top SHAP features, the
nearest physics rule and its margin) and their alert's delivery; `--follow` streams new ones; `--deliver`
runs the webhook deliverer in the terminal (what the `alert_deliveries` asset does once per run)."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tabulate import tabulate

from mfd.alerts.outbox import deliver_due
from mfd.alerts.webhooks import Target, parse_targets
from mfd.errors import MfdError
from mfd.settings import load_settings
from mfd.storage.connect import engine_from_settings
from mfd.storage.tables import alert_outbox, ensure_alert_tables, ensure_detection_tables, failure_events

_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_since(text: str) -> timedelta:
    """`30s`, `10m`, `2h`, `1d` -> timedelta; MfdError otherwise."""
    match = _SINCE.match(text)
    if not match or float(match[1]) <= 0:
        raise MfdError(f"--since expects a positive duration like 30s, 10m, 2h or 1d, got {text!r}")
    return timedelta(**{_UNITS[match[2]]: float(match[1])})


def _query(since: datetime, after_id: int, limit: int) -> sa.Select:
    e, o = failure_events.c, alert_outbox.c
    return (
        sa.select(failure_events, o.payload, o.status.label("alert"), o.last_error)
        .join(alert_outbox, o.reading_id == e.reading_id, isouter=True)
        .where(e.detected_at >= since, e.id > after_id)
        .order_by(e.detected_at.desc(), e.reading_id.desc())
        .limit(limit)
    )


def recent_events(engine: Engine, since: datetime, limit: int, after_id: int = 0) -> pd.DataFrame:
    """Events detected at or after `since` (and with an id above `after_id`), newest first, at most
    `limit`, with their alert's payload and delivery status (None for events from before the outbox)."""
    ensure_detection_tables(engine)
    ensure_alert_tables(engine)
    with engine.connect() as conn:
        df = pd.read_sql(_query(since, after_id, limit), conn)
    for col in ("timestamp", "detected_at"):
        df[col] = pd.to_datetime(df[col], utc=True)
    return df


def _features(text: str) -> str:
    return ", ".join(f"{f['feature']} {f['attribution']:+.2f}" for f in json.loads(text))


def _payload(text: object) -> dict:
    return json.loads(text) if isinstance(text, str) else {}


def _rule(payload: dict) -> str:
    rule = payload.get("nearest_rule")
    if not rule:
        return ""
    state = "fires" if rule["fires"] else "near"
    return f"{rule['rule']} {state} (margin {rule['margin']:+.1%}): {rule['detail']}"


def _alert(row: pd.Series) -> str:
    if not isinstance(row["alert"], str):
        return ""
    error = row["last_error"]
    return row["alert"] + (f" ({error})" if row["alert"] == "pending" and isinstance(error, str) else "")


def events_table(df: pd.DataFrame, headers: bool = True) -> str:
    """The events as a plain-text table for a terminal."""
    payloads = df["payload"].map(_payload)
    rows = pd.DataFrame(
        {
            "detected (UTC)": df["detected_at"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "machine": df["machine_id"],
            "type": payloads.map(lambda p: p.get("machine_type", "")),
            "reading time (UTC)": df["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S"),
            "reading": df["reading_id"],
            "probability": df["probability"].round(3),
            "threshold": payloads.map(lambda p: round(p["threshold"], 3) if "threshold" in p else ""),
            "model": df["model_name"] + " v" + df["model_version"],
            "top SHAP features": df["top_features"].map(_features),
            "nearest physics rule": payloads.map(_rule),
            "alert": df.apply(_alert, axis=1),
        }
    )
    return tabulate(
        rows, headers="keys" if headers else (), tablefmt="simple" if headers else "plain", showindex=False
    )


def follow(
    engine: Engine,
    since: datetime,
    interval_s: float,
    *,
    out: Callable[[str], None] = print,
    polls: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print events as they are detected, oldest first, polling every `interval_s` seconds (`polls`
    times, or until interrupted)."""
    last_id, printed_header, done = 0, False, 0
    while polls is None or done < polls:
        new = recent_events(engine, since, 1000, after_id=last_id).iloc[::-1]
        if len(new):
            out(events_table(new, headers=not printed_header))
            printed_header, last_id = True, int(new["id"].max())
        done += 1
        if polls is None or done < polls:
            sleep(interval_s)


def deliver(
    engine: Engine,
    targets: list[Target],
    window: timedelta,
    timeout: float,
    interval_s: float,
    *,
    out: Callable[[str], None] = print,
    polls: int | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Deliver due alerts every `interval_s` seconds (`polls` times, or until interrupted), one line per
    pass that did something."""
    done = 0
    while polls is None or done < polls:
        report = deliver_due(engine, targets, window=window, timeout=timeout)
        if report.delivered or report.suppressed or report.failed:
            out(f"{datetime.now(UTC):%H:%M:%S} {report.line()}")
        done += 1
        if polls is None or done < polls:
            sleep(interval_s)


def run(args: argparse.Namespace) -> int:
    if args.limit <= 0:
        raise MfdError(f"--limit must be positive, got {args.limit}")
    if args.interval <= 0:
        raise MfdError(f"--interval must be positive, got {args.interval}")
    since = datetime.now(UTC) - parse_since(args.since)
    settings = load_settings()
    engine = engine_from_settings(settings)
    if args.deliver:
        targets = parse_targets(settings.webhook_urls, settings.slack_webhook_urls)
        if not targets:
            raise MfdError("--deliver needs MFD_WEBHOOK_URLS or MFD_SLACK_WEBHOOK_URLS")
        print(f"delivering alerts to {', '.join(t.name for t in targets)} (Ctrl-C stops)", flush=True)
        window = timedelta(seconds=settings.alert_dedup_window_s)
        try:
            deliver(
                engine,
                targets,
                window,
                settings.webhook_timeout_s,
                args.interval,
                out=lambda t: print(t, flush=True),
            )
        except KeyboardInterrupt:
            pass
        return 0
    if args.follow:
        print(f"following failure events since {since:%Y-%m-%d %H:%M:%S} UTC (Ctrl-C stops)", flush=True)
        try:
            follow(engine, since, args.interval, out=lambda text: print(text, flush=True))
        except KeyboardInterrupt:
            pass
        return 0
    df = recent_events(engine, since, args.limit)
    if df.empty:
        print(f"no failure events since {since:%Y-%m-%d %H:%M:%S} UTC")
    else:
        print(events_table(df))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "events",
        help="print the latest predicted failure events",
        description="Failure events detected by prediction_batches, newest first, with their top SHAP "
        "features, the nearest physics rule and the alert's delivery (MFD_DATABASE_URL, else the embedded "
        "SQLite database).",
    )
    parser.add_argument("--since", default="1h", help="how far back: 30s, 10m, 2h, 1d (default 1h)")
    parser.add_argument("--limit", type=int, default=50, help="most events to print (default 50)")
    parser.add_argument(
        "--follow", action="store_true", help="keep printing new events as they are detected (Ctrl-C stops)"
    )
    parser.add_argument(
        "--deliver",
        action="store_true",
        help="post due alerts to MFD_WEBHOOK_URLS / MFD_SLACK_WEBHOOK_URLS until Ctrl-C",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=2.0,
        help="seconds between checks with --follow or --deliver (default 2)",
    )
    parser.set_defaults(func=run)
