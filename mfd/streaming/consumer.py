"""The MQTT consumer behind `mfd stream`: a persistent session (clean_session=False, QoS 1) subscribed to the
root of the reading tree, micro-batches of at most `batch_readings` readings or `batch_seconds` after the
first message, each checked as one frame (`mfd.streaming.payloads`), stored and scored in one transaction
(`mfd.streaming.store`), taken into the alarms (`mfd.alarms.update_alarms`, as the `alarms` asset does
after a prediction batch) and only then acknowledged (paho's manual_ack). A crash before the
acknowledgement makes the broker deliver the batch's messages again: the keys make that redelivery write
nothing twice, and the alarms take the redelivered readings' stored predictions (each machine skips what
it took before). A database outage holds the batch (retried with backoff) while the broker and paho's
thread keep receiving."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa
from paho.mqtt.client import Client, MQTTMessage
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits

from mfd.alarms import update_alarms
from mfd.alerts.costs import DecisionPolicy
from mfd.errors import MfdError
from mfd.generator.mqtt import MqttTarget, mqtt_client
from mfd.modeling.model_io import FailureModel
from mfd.storage.tables import ensure_detection_tables
from mfd.streaming.payloads import DEFAULT_MAX_BYTES, parse_batch
from mfd.streaming.store import Written, warm_up, write_micro_batch

log = logging.getLogger(__name__)

DEFAULT_TREE = "plant/+/readings"
RETRY_ERRORS = (sa.exc.OperationalError, sa.exc.InterfaceError)
Champion = Callable[[], tuple[FailureModel, DecisionPolicy]]
T = TypeVar("T")


@dataclass(frozen=True)
class StreamConfig:
    """What `mfd stream` consumes and how it batches."""

    target: MqttTarget
    tree: str = DEFAULT_TREE
    client_id: str = "mfd-stream"
    batch_readings: int = 2000
    batch_seconds: float = 0.5
    max_bytes: int = DEFAULT_MAX_BYTES
    status_file: Path | None = None  # the counters as JSON, rewritten every `report_seconds`
    report_seconds: float = 5.0
    reload_seconds: float = 60.0  # how often the champion alias is looked up again
    known_machines: frozenset[str] | None = None  # when given, readings of any other machine are refused


def subscription(tree: str) -> str:
    """What to subscribe to: the tree's levels before its first wildcard, then `#`, so messages under the
    tree's root but outside the tree arrive and are refused with a reason."""
    levels = tree.split("/")
    fixed = levels[: next((i for i, v in enumerate(levels) if v in ("+", "#")), len(levels))]
    return "/".join([*fixed, "#"]) if len(fixed) < len(levels) else tree


@dataclass
class Status:
    """The counters a status file and the `readings_stream` observations report."""

    messages: int = 0
    readings: int = 0  # stored (new)
    scored: int = 0
    failures: int = 0
    alarms_opened: int = 0
    rejected: int = 0
    batches: int = 0
    retries: int = 0
    pending: int = 0  # received, not yet acknowledged
    last_message_at: str | None = None
    last_commit_at: str | None = None
    lag_seconds: float = 0.0  # oldest message of the last batch: received -> committed
    model_version: str | None = None
    updated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def write(self, path: Path) -> None:
        self.updated_at = datetime.now(UTC).isoformat()
        staged = path.with_name(f".{path.name}.{os.getpid()}")
        staged.write_text(json.dumps(asdict(self)))
        os.replace(staged, path)


class StreamConsumer:
    """Consume until `stop` is set (`run`); `subscribed` is set once the broker confirmed the subscription."""

    def __init__(self, config: StreamConfig, engine: Engine, champion: Champion) -> None:
        self.config, self.engine, self.champion = config, engine, champion
        self.inbox: queue.Queue[tuple[float, MQTTMessage]] = queue.Queue()
        self.subscribed = threading.Event()
        self.status = Status()
        ensure_detection_tables(engine)  # predictions and failure_events, with rul_estimate
        self._model, self._policy = champion()
        self.status.model_version = self._model.version
        with threadpool_limits(1):
            warm_up(self._model)
        self._loaded_at = time.monotonic()
        self._last_message = 0.0

    def _on_connect(
        self, client: Client, _userdata: object, _flags: object, reason: object, _props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        client.subscribe(subscription(self.config.tree), qos=1)

    def _on_subscribe(self, *_args: object) -> None:
        self.subscribed.set()

    def _on_message(self, _client: Client, _userdata: object, message: MQTTMessage) -> None:
        self._last_message = time.time()
        self.inbox.put((time.monotonic(), message))

    def run(self, stop: threading.Event) -> Status:
        """Consume until `stop` is set; the last counters."""
        client = mqtt_client(self.config.target, self.config.client_id, persistent=True, manual_ack=True)
        client.on_connect, client.on_subscribe = self._on_connect, self._on_subscribe
        client.on_message = self._on_message
        host, port = self.config.target.address()
        client.connect_async(host, port, keepalive=30)
        client.loop_start()
        reported = 0.0
        # No OpenMP threads for the model and SHAP (as detection): on a busy host they cost ~1 s a batch;
        # set once, since each threadpool_limits() costs ~30 ms.
        limits = threadpool_limits(1)
        try:
            while not stop.is_set():
                batch = self._collect(stop)
                if batch and self._commit(batch, stop) is not None:
                    for _, message in batch:  # committed: now the broker may forget them
                        client.ack(message.mid, message.qos)
                if time.monotonic() - reported >= self.config.report_seconds:
                    self._report()
                    reported = time.monotonic()
        finally:
            limits.restore_original_limits()
            client.disconnect()
            client.loop_stop()
            self._report()
        return self.status

    def _collect(self, stop: threading.Event) -> list[tuple[float, MQTTMessage]]:
        """Messages until `batch_readings` readings or `batch_seconds` after the first (or none: idle)."""
        batch: list[tuple[float, MQTTMessage]] = []
        deadline, readings = None, 0
        while readings < self.config.batch_readings and not stop.is_set():
            wait = 0.2 if deadline is None else deadline - time.monotonic()
            if wait <= 0:
                break
            try:
                received, message = self.inbox.get(timeout=wait)
            except queue.Empty:
                if deadline is None:
                    return batch
                break
            deadline = deadline or time.monotonic() + self.config.batch_seconds
            batch.append((received, message))
            readings += max(1, message.payload.count(b"{"))  # an estimate; parsed in `_commit`
        return batch

    def _commit(self, batch: list[tuple[float, MQTTMessage]], stop: threading.Event) -> Written | None:
        """Parse, store, score and take into the alarms the batch, retrying while the database is
        unreachable; None when stopped first."""
        parsed = parse_batch(
            [(message.topic, message.payload) for _, message in batch],
            self.config.tree,
            datetime.now(UTC),
            self.config.max_bytes,
            known_machines=self.config.known_machines,
        )
        self._reload_champion()
        self.status.pending = len(batch) + self.inbox.qsize()
        model, policy = self._model, self._policy
        written = self._retrying(
            lambda: write_micro_batch(self.engine, model, policy, parsed.readings, parsed.rejections), stop
        )
        if written is None:
            return None
        thresholds = {k: float(v) for k, v in policy.thresholds.items() if k != "all"}
        alarms = self._retrying(  # a batch run opening a machine's first alarm at once: a key conflict
            lambda: update_alarms(self.engine, written.scored_readings, thresholds=thresholds or None),
            stop,
            (*RETRY_ERRORS, sa.exc.IntegrityError),
        )
        if alarms is None:
            return None
        self.status.alarms_opened += alarms.opened
        self._counted(batch, written)
        return written

    def _retrying(
        self, step: Callable[[], T], stop: threading.Event, errors: tuple[type[Exception], ...] = RETRY_ERRORS
    ) -> T | None:
        """`step()`, again with backoff (0.5 s doubling to 5 s) while it fails with `errors` (the database
        unreachable)."""
        delay = 0.5
        while True:
            try:
                return step()
            except errors as exc:
                self.status.retries += 1
                log.warning("readings database unreachable (%s); retrying in %.1f s", str(exc)[:200], delay)
                if stop.wait(delay):
                    return None
                delay = min(delay * 2, 5.0)

    def _counted(self, batch: list[tuple[float, MQTTMessage]], written: Written) -> None:
        s = self.status
        s.messages += len(batch)
        s.readings += written.readings
        s.scored += written.scored
        s.failures += written.failures
        s.rejected += written.rejected
        s.batches += 1
        s.pending = self.inbox.qsize()
        s.lag_seconds = round(time.monotonic() - min(r for r, _ in batch), 3)
        s.last_commit_at = datetime.now(UTC).isoformat()
        s.last_message_at = datetime.fromtimestamp(self._last_message, UTC).isoformat()

    def _reload_champion(self) -> None:
        """Look the champion up again every `reload_seconds`; a failure keeps the model in hand."""
        if time.monotonic() - self._loaded_at < self.config.reload_seconds:
            return
        self._loaded_at = time.monotonic()
        try:
            model, self._policy = self.champion()
            if model.version != self._model.version:
                warm_up(model)
            self._model = model
            self.status.model_version = model.version
        except MfdError as exc:
            log.warning("champion lookup failed (%s); scoring with version %s", exc, self._model.version)

    def _report(self) -> None:
        if self.config.status_file is not None:
            self.status.write(self.config.status_file)
