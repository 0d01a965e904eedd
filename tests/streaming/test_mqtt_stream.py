"""`mfd stream` against a real Mosquitto (password file, persistence) and a real PostgreSQL: bad payloads
are refused with reasons while the consumer keeps going; readings are stored and scored exactly once."""

from __future__ import annotations

import json
import threading
import time

import pandas as pd
import pytest
import sqlalchemy as sa
from streaming_helpers import (
    StreamProcess,
    child_env,
    consuming,
    counts,
    database_down,
    fleet,
    keys_of,
    publish,
    stored_keys,
    target,
    wait_for,
)

from mfd.cli.main import main
from mfd.detection.planning import DetectionCursor, plan_batches
from mfd.generator.mqtt import MqttPublisher, mqtt_client, reading_payloads
from mfd.schema import PROFILE
from mfd.services import postgres_server
from mfd.services.mosquitto import Mosquitto, mosquitto_server
from mfd.storage.readings import create_engine, ensure_tables, insert_readings
from mfd.storage.tables import ensure_detection_tables
from mfd_resources import Tracking


def _engine(url: str) -> sa.Engine:
    engine = create_engine(url)
    ensure_tables(engine)
    return engine


def _reading(**changes: object) -> dict[str, object]:
    topic, payload = reading_payloads(fleet(1, 1, seed=3), PROFILE)[0]
    return {**json.loads(payload), **changes}


def test_mqtt_bad_payloads_are_rejected_with_reasons_and_the_consumer_keeps_going(
    mosquitto: Mosquitto, pg_url: str, champion: Tracking
) -> None:
    engine = _engine(pg_url)
    good = _reading()
    machine = good["machine_id"]
    tree = f"plant/{machine}/readings"
    bad = {
        "not json": (tree, b"not json {"),
        "wrong shape": (tree, b'"a string"'),
        "empty list": (tree, b"[]"),
        "out of range": (tree, json.dumps(_reading(torque_nm=900.0)).encode()),
        "missing sensor": (
            tree,
            json.dumps({k: v for k, v in good.items() if k != "tool_wear_min"}).encode(),
        ),
        "unknown field": (tree, json.dumps(_reading(colour="red")).encode()),
        "too old": (tree, json.dumps(_reading(timestamp="1990-01-01T00:00:00Z")).encode()),
        "outside tree": (f"plant/{machine}/status", json.dumps(good).encode()),
        "other machine": ("plant/another/readings", json.dumps(good).encode()),
        "oversized": (tree, json.dumps([good] * 400).encode()),
        "invalid utf-8": (tree, b"\xff\xfe\x00{"),
        "unknown machine": ("plant/M-9999/readings", json.dumps(_reading(machine_id="M-9999")).encode()),
    }
    mixed = [_reading(timestamp="2026-12-07T10:00:00Z"), _reading(rotational_speed_rpm=-5.0)]
    known = frozenset({machine})  # the unknown-machine policy: only this machine's readings are taken
    with consuming(
        mosquitto, engine, champion, "bad-payloads", max_bytes=20_000, known_machines=known
    ) as consumer:
        publisher = MqttPublisher(target(mosquitto), PROFILE)
        for topic, payload in bad.values():
            publisher.publish(topic, payload)
        publisher.publish(tree, json.dumps(mixed).encode())
        publisher.publish(tree, json.dumps(good).encode())
        publisher.close()
        wait_for(
            lambda: counts(engine)["rejected"] == len(bad) + 1 and counts(engine)["predictions"] == 2, "all"
        )
        assert consumer.subscribed.is_set()
    with engine.connect() as conn:
        reasons = [r for (r,) in conn.execute(sa.text("SELECT reason FROM rejected_readings ORDER BY id"))]
        payloads = [p for (p,) in conn.execute(sa.text("SELECT payload FROM rejected_readings ORDER BY id"))]
    text = "\n".join(reasons)
    for expected in (
        "not JSON",
        "wrong shape: a JSON object or a list of objects, got str",
        "wrong shape: an empty list",
        "torque_nm: Input should be less than or equal to 200",
        "tool_wear_min: Field required",
        "colour: Extra inputs are not permitted",
        "timestamp 1990-01-01T00:00:00Z outside",
        "outside the reading tree 'plant/+/readings'",
        "differs from the topic's machine 'another'",
        "oversized:",
        "readings[1]: rotational_speed_rpm: Input should be greater than or equal to 0",
        "unknown machine 'M-9999' (not among the 1 known machines)",
    ):
        assert expected in text, f"{expected!r} not among the reasons:\n{text}"
    assert "not json {" in payloads
    assert counts(engine) | {"rejected": 0} == {
        "readings": 2,
        "keys": 2,
        "predictions": 2,
        "unscored": 0,
        "rejected": 0,
    }


def test_mqtt_broker_restart_loses_nothing_queued_for_the_persistent_session(
    pg_url: str, champion: Tracking
) -> None:
    engine = _engine(pg_url)
    first, second = fleet(10, 200, seed=5), fleet(10, 400, seed=6).iloc[200:]
    with mosquitto_server() as broker:
        with consuming(broker, engine, champion, "restart"):
            publish(broker, first.iloc[:100])
            wait_for(lambda: counts(engine)["predictions"] == 100, "the first readings scored")
        publish(broker, first.iloc[100:])  # the consumer is away: queued for its session
        broker.stop()
        broker.start()  # the queue comes back from the broker's store
        with consuming(broker, engine, champion, "restart"):
            wait_for(lambda: counts(engine)["predictions"] == 200, "the queued readings scored")
            broker.stop()  # and once more while the consumer is connected
            broker.start()
            publish(broker, second)
            wait_for(lambda: counts(engine)["predictions"] == 400, "the readings after the restart")
    assert counts(engine) == {"readings": 400, "keys": 400, "predictions": 400, "unscored": 0, "rejected": 0}
    assert stored_keys(engine) == keys_of(first) | keys_of(second)


def test_mqtt_exactly_once_when_the_consumer_is_killed_mid_batch(
    mosquitto: Mosquitto, pg_url: str, champion: Tracking
) -> None:
    """SIGKILL after a batch committed but before its acknowledgement (the broker delivers it again), then
    SIGKILL in the middle of a batch's COPY (nothing of it committed): every reading once, each scored once."""
    engine = _engine(pg_url)
    readings = fleet(20, 600, seed=11)
    env = child_env(pg_url, champion.tracking_uri, champion.model_name, champion.local_home)
    committed = StreamProcess(mosquitto, env, "killed", pause_at="stream-commit")
    wait_for(lambda: committed.said("subscribed to plant/#"), "the first consumer to subscribe", 120)
    publish(mosquitto, readings.iloc[:300])
    wait_for(lambda: committed.said("paused at stream-commit"), "a batch committed, not acknowledged")
    committed.kill()
    after_first = counts(engine)
    assert 0 < after_first["readings"] == after_first["predictions"] < 300
    publish(mosquitto, readings.iloc[300:450])  # queued for the session while no consumer runs
    copying = StreamProcess(mosquitto, env, "killed", pause_at="copy")
    wait_for(lambda: copying.said("paused at copy"), "a batch in the middle of its COPY", 120)
    copying.kill()
    assert counts(engine) == after_first  # the half-written batch left nothing
    with consuming(mosquitto, engine, champion, "killed"):  # the same session, on a thread this time
        publish(mosquitto, readings.iloc[450:])
        wait_for(lambda: counts(engine)["predictions"] == 600, "every reading scored", 120)
    assert counts(engine) == {"readings": 600, "keys": 600, "predictions": 600, "unscored": 0, "rejected": 0}
    assert stored_keys(engine) == keys_of(readings)
    # the alarms took every machine's readings up to its last, the batch committed before the kill included
    with engine.connect() as conn:
        taken = conn.execute(sa.text("SELECT machine_id, last_reading_id FROM machine_risk")).all()
        last = conn.execute(sa.text("SELECT machine_id, max(id) FROM readings GROUP BY machine_id")).all()
    assert sorted(taken) == sorted(last) and len(taken) == 20


def _publish_paced(broker: Mosquitto, frame: pd.DataFrame, per_tick: int, tick: float) -> threading.Thread:
    """Publish `frame` `per_tick` readings every `tick` seconds on a thread (a plant that keeps sending)."""

    def run() -> None:
        publisher = MqttPublisher(target(broker), PROFILE)
        try:
            for start in range(0, len(frame), per_tick):
                publisher.publish_frame(frame.iloc[start : start + per_tick])
                time.sleep(tick)
        finally:
            publisher.close()

    thread = threading.Thread(target=run, name="plant")
    thread.start()
    return thread


def test_mqtt_database_outage_of_15_s_while_messages_keep_coming(
    mosquitto: Mosquitto, champion: Tracking
) -> None:
    """PostgreSQL stopped for 15 s while the plant publishes: the batch in hand is retried, the rest waits
    unacknowledged; afterwards every reading is stored and scored exactly once."""
    readings = fleet(20, 2000, seed=21)  # 100 readings/s for 20 s
    with postgres_server() as server:
        engine = _engine(server.create_database("stream"))
        with consuming(mosquitto, engine, champion, "outage") as consumer:
            plant = _publish_paced(mosquitto, readings, per_tick=10, tick=0.1)
            wait_for(lambda: counts(engine)["predictions"] > 0, "the first readings scored")
            with database_down(server):
                wait_for(lambda: consumer.status.retries > 0, "the consumer to meet the outage")
                time.sleep(15)  # the outage: the plant keeps publishing
                held = consumer.status.pending
            plant.join()
            wait_for(lambda: counts(engine)["predictions"] == len(readings), "every reading scored", 120)
        assert held > 0
        assert counts(engine) == {
            "readings": 2000,
            "keys": 2000,
            "predictions": 2000,
            "unscored": 0,
            "rejected": 0,
        }
        assert stored_keys(engine) == keys_of(readings)
        engine.dispose()


def test_mqtt_scored_readings_are_skipped_by_the_prediction_sensors_planning(pg_url: str) -> None:
    """Readings the stream stored with their predictions are never planned for a batch run; the frontier
    passes them, and a reading loaded from a file afterwards is planned."""
    engine = _engine(pg_url)
    ensure_detection_tables(engine)
    streamed, filed = fleet(5, 60, seed=31), fleet(5, 80, seed=32).iloc[60:]
    insert_readings(engine, streamed)
    with engine.begin() as conn:  # as the stream writes them: readings and predictions together
        conn.execute(
            sa.text(
                "INSERT INTO predictions (reading_id, model_name, model_version, probability, label, scored_at) "
                "SELECT id, 'm', '1', 0.1, 0, now() FROM readings"
            )
        )
    ranges, cursor = plan_batches(engine, DetectionCursor(), max_rows=1000, max_batches=4)
    assert ranges == []
    assert cursor.settled == 60
    insert_readings(engine, filed)
    ranges, cursor = plan_batches(engine, cursor, max_rows=1000, max_batches=4)
    assert [(r.first_id, r.last_id, r.rows) for r in ranges] == [(61, 80, 20)]


def test_mqtt_sink_of_mfd_generate_publishes_one_message_per_reading(
    mosquitto: Mosquitto, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    received: list[tuple[str, dict]] = []
    subscriber = mqtt_client(target(mosquitto), "generate-sink-test")
    subscriber.on_message = lambda _c, _u, m: received.append((m.topic, json.loads(m.payload)))
    subscriber.on_subscribe = lambda *_: subscribed.set()
    subscribed = threading.Event()
    subscriber.connect(*target(mosquitto).address())
    subscriber.subscribe("plant/#", qos=1)
    subscriber.loop_start()
    try:
        wait_for(subscribed.is_set, "the subscription")
        monkeypatch.setenv("MFD_MQTT_USERNAME", mosquitto.username)
        monkeypatch.setenv("MFD_MQTT_PASSWORD", mosquitto.password)
        argv = ["generate", "--sink", "mqtt", "--mqtt-url", mosquitto.url, "--machines", "3", "--rows", "30"]
        assert main([*argv, "--quiet"]) == 0
        wait_for(lambda: len(received) == 30, "30 messages")
    finally:
        subscriber.disconnect()
        subscriber.loop_stop()
    assert "30 MQTT messages acknowledged" in capsys.readouterr().out
    topic, body = received[0]
    assert topic == f"plant/{body['machine_id']}/readings"
    assert sorted(body) == sorted(["machine_id", "timestamp", "machine_type", *PROFILE.sensor_columns])
    assert len({(b["machine_id"], b["timestamp"]) for _, b in received}) == 30
