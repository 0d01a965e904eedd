"""Readings published to an MQTT broker (`mfd generate --sink mqtt`, the stream's tests and bench): one JSON
object per reading, keyed by the profile's source column names, on `plant/<machine>/readings`, QoS 1.

Also the one place an MQTT client is built (paho-mqtt 2.x, callback API version 2), for the publisher here
and the consumer (`mfd.streaming`)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
from paho.mqtt.client import CallbackAPIVersion, Client, MQTTErrorCode, MQTTMessageInfo

from mfd.errors import MfdError
from mfd.profiles import Profile

TOPIC_TEMPLATE = "plant/{machine}/readings"
DEFAULT_PORT = 1883


@dataclass(frozen=True)
class MqttTarget:
    """A broker and the account to use: `url` is mqtt://host[:port]."""

    url: str
    username: str | None = None
    password: str | None = None

    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        if parts.scheme != "mqtt" or not parts.hostname:
            raise MfdError(f"MQTT broker URL {self.url!r} is not mqtt://host[:port]")
        return parts.hostname, parts.port or DEFAULT_PORT


def mqtt_client(
    target: MqttTarget, client_id: str = "", persistent: bool = False, manual_ack: bool = False
) -> Client:
    """A paho client for `target` (not yet connected): `persistent` keeps the broker's session across
    connections (clean_session=False, needs a `client_id`); `manual_ack` leaves PUBACKs to `Client.ack`."""
    client = Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=not persistent,
        manual_ack=manual_ack,
    )
    if target.username:
        client.username_pw_set(target.username, target.password)
    client.reconnect_delay_set(1, 5)
    return client


def _value(value: object) -> object:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def reading_payloads(
    chunk: pd.DataFrame, profile: Profile, topic: str = TOPIC_TEMPLATE
) -> list[tuple[str, bytes]]:
    """(topic, JSON payload) per reading of `chunk` (canonical names): the machine key, the timestamp, the
    segment attribute where the profile has one, and the sensors, in the profile's source names."""
    columns = [c for c in ("machine_id", "timestamp", "machine_type") if c in profile.source_names]
    columns += list(profile.sensor_columns)
    names = [profile.source_name(c) for c in columns]
    frame = chunk[columns].assign(timestamp=pd.to_datetime(chunk["timestamp"], utc=True))
    out = []
    for row in frame.itertuples(index=False, name=None):
        body = {n: _value(v) for n, v in zip(names, row, strict=True)}
        out.append((topic.format(machine=row[0]), json.dumps(body).encode()))
    return out


class MqttPublisher:
    """A connected publisher; `close()` returns once the broker acknowledged every message (QoS 1)."""

    def __init__(self, target: MqttTarget, profile: Profile, client_id: str = "", qos: int = 1) -> None:
        self.profile, self.qos = profile, qos
        self.client = mqtt_client(target, client_id)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        host, port = target.address()
        try:
            self.client.connect(host, port, keepalive=30)
        except OSError as exc:
            raise MfdError(f"MQTT broker {target.url} unreachable: {exc}") from exc
        self.client.loop_start()
        self._sent: list[MQTTMessageInfo] = []

    def publish(self, topic: str, payload: bytes) -> MQTTMessageInfo:
        """Queue one message; when paho's 65,535 message ids are all taken by unacknowledged messages (a
        broker slower than the publisher), wait for the oldest first (backpressure, nothing dropped)."""
        while True:
            info = self.client.publish(topic, payload, qos=self.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or not self._sent:
                break
            self._sent[0].wait_for_publish(30)
            self._sent = [i for i in self._sent if not i.is_published()]
        self._sent.append(info)
        return info

    def publish_frame(self, chunk: pd.DataFrame) -> int:
        """Publish every reading of `chunk`; the count."""
        messages = reading_payloads(chunk, self.profile)
        for topic, payload in messages:
            self.publish(topic, payload)
        self._sent = [i for i in self._sent if not i.is_published()]
        return len(messages)

    def close(self, timeout: float = 60.0) -> None:
        """Wait for the broker's acknowledgements, then disconnect; MfdError if some never came."""
        try:
            for info in self._sent:
                info.wait_for_publish(timeout)
            missing = sum(not info.is_published() for info in self._sent)
        finally:
            self.client.disconnect()
            self.client.loop_stop()
        if missing:
            raise MfdError(f"{missing:,} MQTT messages not acknowledged by the broker within {timeout:g} s")
