"""Readings over MQTT on the production stack: the stack's mosquitto refuses anonymous clients and wrong
passwords; readings published with the stack's account (`stack env`: MFD_MQTT_*) are stored and scored by
the stack's `mfd stream` with the champion, once each."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from paho.mqtt.client import CallbackAPIVersion, Client
from stack_helpers import Pipeline, RunningStack

from mfd.generator import generate_readings
from mfd.generator.mqtt import MqttPublisher, MqttTarget, reading_payloads
from mfd.schema import PROFILE
from mfd.services.mosquitto import accepts_login

pytestmark = pytest.mark.integration


def _fleet(seed: int, prefix: str) -> pd.DataFrame:
    """Two machines' readings of the last minutes (inside the plausible window), renamed to this test's."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    frame = generate_readings(2, 12, seed, start, interval_s=30.0)
    return frame.assign(machine_id=prefix + frame["machine_id"].astype(str))


def _stored(running: RunningStack, prefix: str) -> tuple[int, int, set[str]]:
    """Readings of machines named `prefix...`, their predictions, and the predictions' model versions."""
    engine = running.engine()
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT r.id, p.model_version FROM readings r LEFT JOIN predictions p ON p.reading_id = r.id"
                    " WHERE r.machine_id LIKE :prefix"
                ),
                {"prefix": f"{prefix}%"},
            ).all()
    finally:
        engine.dispose()
    return len(rows), sum(v is not None for _, v in rows), {v for _, v in rows if v is not None}


def _publish_anonymously(running: RunningStack, frame: pd.DataFrame) -> str:
    """Try to publish `frame` without an account; the broker's answer to the CONNECT."""
    answer, answered = [], threading.Event()

    def on_connect(_c: Client, _u: object, _f: object, reason: object, _p: object) -> None:
        answer.append(str(reason))
        answered.set()

    client = Client(CallbackAPIVersion.VERSION2, client_id="mfd-e2e-anonymous")
    client.on_connect = on_connect
    client.connect("127.0.0.1", running.stack.ports.mqtt, keepalive=10)
    client.loop_start()
    try:
        for topic, payload in reading_payloads(frame, PROFILE):
            client.publish(topic, payload, qos=1)
        assert answered.wait(30), "the broker did not answer an anonymous CONNECT"
    finally:
        client.disconnect()
        client.loop_stop()
    return answer[0]


def test_mqtt_readings_on_the_stack_broker_are_stored_and_scored_and_strangers_refused(
    running_stack: RunningStack, pipeline: Pipeline
) -> None:
    running = running_stack
    stack = running.stack
    running.wait(stack.stream_ready, "the stack's mfd stream consuming", timeout=300)
    port, password = stack.ports.mqtt, running.env["MFD_MQTT_PASSWORD"]
    assert running.env["MFD_MQTT_URL"] == f"mqtt://127.0.0.1:{port}"
    assert not accepts_login("127.0.0.1", port, None, None)
    assert not accepts_login("127.0.0.1", port, "mfd", "not-the-password")
    assert accepts_login("127.0.0.1", port, running.env["MFD_MQTT_USERNAME"], password)

    strangers = _fleet(31, "ANON-")
    answer = _publish_anonymously(running, strangers)
    assert "authori" in answer.lower(), answer

    ours = _fleet(32, "MQTT-")
    target = MqttTarget(running.env["MFD_MQTT_URL"], running.env["MFD_MQTT_USERNAME"], password)
    publisher = MqttPublisher(target, PROFILE)
    try:
        assert publisher.publish_frame(ours) == len(ours)
    finally:
        publisher.close()  # returns once the broker acknowledged every message
    running.wait(
        lambda: _stored(running, "MQTT-")[:2] == (len(ours), len(ours)),
        f"the {len(ours)} readings published over MQTT stored and scored (last: readings, predictions)",
        timeout=120,
    )
    readings, predicted, versions = _stored(running, "MQTT-")
    assert (readings, predicted) == (len(ours), len(ours))
    assert versions == {pipeline.champion}
    assert _stored(running, "ANON-") == (0, 0, set())
