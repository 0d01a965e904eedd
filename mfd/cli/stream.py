"""`mfd stream`: consume readings from an MQTT broker, store and score them as they arrive."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from mfd.alerts.costs import DecisionPolicy
from mfd.errors import MfdError
from mfd.generator.mqtt import MqttTarget
from mfd.modeling.model_io import FailureModel
from mfd.registry.champion import load_champion
from mfd.settings import load_settings
from mfd.storage import tracking
from mfd.storage.connect import engine_from_settings
from mfd.streaming.consumer import DEFAULT_TREE, StreamConfig, StreamConsumer, subscription
from mfd.streaming.payloads import DEFAULT_MAX_BYTES
from mfd.streaming.status import STATUS_FILE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stream",
        help="consume readings from an MQTT broker: validate, store and score each micro-batch",
        description="Subscribe (QoS 1, persistent session) to the reading tree on an MQTT broker; each "
        "micro-batch of readings (JSON, the profile's source names) is validated by the profile's rules, "
        "stored with the champion's predictions in one transaction and only then acknowledged. Refused "
        "messages go to rejected_readings. The password comes from MFD_MQTT_PASSWORD. See docs/streaming.md.",
    )
    env = os.environ.get
    parser.add_argument(
        "--url", default=env("MFD_MQTT_URL", "mqtt://127.0.0.1:1883"), help="mqtt://host:port"
    )
    parser.add_argument(
        "--username", default=env("MFD_MQTT_USERNAME"), help="broker account (MFD_MQTT_USERNAME)"
    )
    parser.add_argument(
        "--topics",
        default=env("MFD_MQTT_TOPICS", DEFAULT_TREE),
        help=f"reading tree (default {DEFAULT_TREE})",
    )
    parser.add_argument(
        "--client-id", default=env("MFD_MQTT_CLIENT_ID", "mfd-stream"), help="the persistent session's id"
    )
    parser.add_argument("--batch-readings", type=int, default=2000, help="readings per micro-batch at most")
    parser.add_argument(
        "--batch-seconds", type=float, default=0.5, help="seconds a micro-batch waits at most"
    )
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="largest message accepted")
    parser.add_argument(
        "--known-machines",
        type=Path,
        default=env("MFD_MQTT_KNOWN_MACHINES"),
        help="unknown-machine policy: a file of machine ids, one a line; readings of any other machine are "
        "refused (default: every machine is accepted, as file ingestion does)",
    )
    parser.add_argument(
        "--status-file", type=Path, help="counters as JSON (default MFD_HOME/stream-status.json)"
    )
    parser.add_argument("--database-url", help="readings database URL (overrides MFD_DATABASE_URL)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    engine = engine_from_settings(settings, args.database_url)
    uri, name, home = settings.tracking_uri, settings.model_name, settings.home

    def champion() -> tuple[FailureModel, DecisionPolicy]:
        loaded = load_champion(uri, name, lambda: tracking.connect(uri), home)
        return loaded.model, loaded.policy

    config = StreamConfig(
        target=MqttTarget(args.url, args.username, os.environ.get("MFD_MQTT_PASSWORD")),
        tree=args.topics,
        client_id=args.client_id,
        batch_readings=args.batch_readings,
        batch_seconds=args.batch_seconds,
        max_bytes=args.max_bytes,
        known_machines=known_machines(args.known_machines),
        status_file=args.status_file or home / STATUS_FILE,
    )
    consumer = StreamConsumer(config, engine, champion)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    announce = threading.Thread(target=_announce, args=(consumer, config, stop), daemon=True)
    announce.start()
    status = consumer.run(stop)
    print(
        f"mfd stream: stopped; {status.messages:,} messages, {status.readings:,} new readings, "
        f"{status.scored:,} scored, {status.failures:,} failures, {status.rejected:,} rejected",
        flush=True,
    )
    return 0


def known_machines(path: Path | str | None) -> frozenset[str] | None:
    """The machine ids listed in `path` (one a line, blank lines and # comments left out), or None."""
    if not path:
        return None
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise MfdError(f"known-machines file {path}: {exc.strerror}") from exc
    return frozenset(s for line in lines if (s := line.split("#", 1)[0].strip()))


def _announce(consumer: StreamConsumer, config: StreamConfig, stop: threading.Event) -> None:
    while not stop.is_set():
        if consumer.subscribed.wait(0.5):
            print(
                f"mfd stream: subscribed to {subscription(config.tree)} (reading tree {config.tree}) as "
                f"{config.client_id} on {config.target.url}; model version {consumer.status.model_version}",
                flush=True,
            )
            return
    print("mfd stream: stopped before subscribing", file=sys.stderr)
