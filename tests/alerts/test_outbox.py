"""The alert outbox on PostgreSQL and the SQLite twin, delivered to a real local HTTP receiver: a receiver
that goes down mid-stream gets every alert exactly once when it is back; errors get clear messages."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from receiver import Receiver

from mfd.alerts import outbox
from mfd.alerts.webhooks import DeliveryFailed, Target, parse_targets, post
from mfd.errors import MfdError
from mfd.storage.readings import create_engine
from mfd.storage.tables import alert_outbox, ensure_alert_tables

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=15)


def events(first_id: int, count: int, machine: str | None = None, step: timedelta = timedelta(minutes=1)):
    return pd.DataFrame(
        {
            "reading_id": range(first_id, first_id + count),
            "machine_id": [machine or f"M-{i}" for i in range(first_id, first_id + count)],
            "machine_type": "L",
            "timestamp": [T0 + i * step for i in range(count)],
            "probability": 0.91,
            "threshold": 0.3,
            "model_name": "m",
            "model_version": "3",
            "top_features": json.dumps([{"feature": "torque_nm", "value": 60.0, "attribution": 1.2}]),
            "nearest_rule": [{"rule": "power", "fires": False, "margin": 0.05, "detail": "power 9500 W"}]
            * count,
            "explainer": "shap tree",
        }
    )


def enqueue(engine: sa.Engine, frame: pd.DataFrame) -> int:
    with engine.begin() as conn:
        return outbox.enqueue(conn, frame, T0)


def statuses(engine: sa.Engine) -> pd.DataFrame:
    with engine.connect() as conn:
        return pd.read_sql(sa.select(alert_outbox).order_by(alert_outbox.c.id), conn)


@pytest.fixture
def engine(readings_url: str) -> sa.Engine:
    engine = create_engine(readings_url)
    ensure_alert_tables(engine)
    return engine


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_a_receiver_down_mid_stream_gets_every_alert_once_it_is_back(engine, receiver: Receiver) -> None:
    assert enqueue(engine, events(1, 10)) == 10
    assert enqueue(engine, events(1, 10)) == 0  # same events again (a re-run): same idempotency keys
    target = Target(receiver.url)
    receiver.down_after = 4

    first = outbox.deliver_due(engine, [target], window=WINDOW, timeout=1.0, now=T0)
    assert not receiver.running and first.delivered == 4 and first.failed == 6
    assert any("unreachable" in e or "did not answer" in e for e in first.errors), first.errors

    # Detection is not blocked by the dead receiver: new events go into the outbox as usual.
    assert enqueue(engine, events(11, 5)) == 5
    assert outbox.deliver_due(engine, [target], window=WINDOW, timeout=1.0, now=T0).failed == 5
    # Nothing is due before the backoff ends.
    soon = outbox.deliver_due(engine, [target], window=WINDOW, timeout=1.0, now=T0 + timedelta(seconds=2))
    assert (soon.delivered, soon.failed) == (0, 0)
    still_down = outbox.deliver_due(
        engine, [target], window=WINDOW, timeout=1.0, now=T0 + timedelta(minutes=5)
    )
    assert still_down.failed == 11 and still_down.delivered == 0
    pending = statuses(engine).query("status == 'pending'")
    assert len(pending) == 11 and (pending["attempts"] >= 2).all()
    assert pending["last_error"].str.contains(f"webhook json:http://127.0.0.1:{receiver.port}").all()

    back = Receiver(port=receiver.port).start()
    try:
        later = outbox.deliver_due(engine, [target], window=WINDOW, timeout=1.0, now=T0 + timedelta(hours=1))
        assert (later.delivered, later.failed) == (11, 0)
        keys = receiver.keys() + back.keys()
    finally:
        back.stop()
    expected = [outbox.idempotency_key(i) for i in range(1, 16)]
    assert sorted(keys) == sorted(expected)  # every alert, each exactly once
    assert (statuses(engine)["status"] == "delivered").all()
    assert sorted(body["reading_id"] for _, body in back.received) == list(range(5, 16))


def _episodes(engine: sa.Engine) -> dict[int, dict]:
    rows = statuses(engine)
    return {
        int(r.reading_id): json.loads(r.payload)["episode"] | {"status": r.status} for r in rows.itertuples()
    }


def test_a_machines_events_are_one_episode_and_one_message(engine, receiver: Receiver) -> None:
    # machine A at 08:00, 08:05, 08:10, 08:20 (each within 15 min of the last), again at 09:00; machine B once
    a = events(1, 5, machine="A").assign(
        timestamp=[T0 + timedelta(minutes=m) for m in (0, 5, 10, 20, 60)],
        probability=[0.5, 0.9, 0.7, 0.6, 0.8],
    )
    assert enqueue(engine, pd.concat([a, events(6, 1, machine="B")])) == 3
    episodes = _episodes(engine)
    assert sorted(episodes) == [1, 5, 6]
    assert episodes[1]["count"] == 4 and episodes[1]["peak_probability"] == 0.9
    assert episodes[1]["peak_reading_id"] == 2 and episodes[1]["last_reading_id"] == 4
    assert (episodes[1]["first_seen"], episodes[1]["last_seen"]) == (
        T0.isoformat(),
        (T0 + timedelta(minutes=20)).isoformat(),
    )
    assert episodes[5]["count"] == episodes[6]["count"] == 1
    report = outbox.deliver_due(engine, [Target(receiver.url)], window=WINDOW, now=T0)
    assert (report.delivered, report.suppressed) == (3, 0)
    bodies = {b["reading_id"]: b for _, b in receiver.received}
    assert sorted(bodies) == [1, 5, 6] and bodies[1]["episode"]["count"] == 4


def test_a_later_batch_grows_the_open_episode_and_a_rerun_counts_nothing_twice(
    engine, receiver: Receiver
) -> None:
    first = events(1, 3, machine="A")  # 08:00, 08:01, 08:02
    assert enqueue(engine, first) == 1
    assert enqueue(engine, first) == 0 and _episodes(engine)[1]["count"] == 3  # a re-run: the same episode
    later = events(4, 2, machine="A").assign(timestamp=[T0 + timedelta(minutes=m) for m in (10, 12)])
    assert enqueue(engine, later) == 0  # pending: its message grows before it is sent
    assert _episodes(engine)[1]["count"] == 5
    target = Target(receiver.url)
    assert outbox.deliver_due(engine, [target], window=WINDOW, now=T0).delivered == 1
    [(_, body)] = receiver.received
    assert (
        body["episode"]["count"] == 5
        and body["episode"]["last_seen"] == (T0 + timedelta(minutes=12)).isoformat()
    )
    # After delivery the record keeps counting and nothing is sent again.
    more = events(6, 2, machine="A").assign(timestamp=[T0 + timedelta(minutes=m) for m in (20, 25)])
    assert enqueue(engine, more) == 0 and enqueue(engine, more) == 0
    assert _episodes(engine)[1]["count"] == 7
    assert _episodes(engine)[1]["status"] == "delivered"
    again = outbox.deliver_due(engine, [target], window=WINDOW, now=T0 + timedelta(hours=1))
    assert (again.delivered, again.suppressed, len(receiver.received)) == (0, 0, 1)
    # Past the gap: a new episode, a new message.
    late = events(8, 1, machine="A").assign(timestamp=[T0 + timedelta(minutes=45)])
    assert enqueue(engine, late) == 1
    assert outbox.deliver_due(engine, [target], window=WINDOW, now=T0 + timedelta(hours=1)).delivered == 1


def test_a_flood_of_events_is_one_row_per_machine_episode(engine) -> None:
    flood = pd.concat(
        events(1 + m * 2_000, 2_000, machine=f"M-{m}", step=timedelta(seconds=10)) for m in range(5)
    )
    assert enqueue(engine, flood) == 5
    assert len(statuses(engine)) == 5 and {e["count"] for e in _episodes(engine).values()} == {2_000}


def test_generic_json_and_slack_bodies_carry_the_explanation(engine, receiver: Receiver) -> None:
    enqueue(engine, events(1, 1))
    targets = [Target(receiver.url), Target(receiver.url + "/slack", "slack")]
    assert outbox.deliver_due(engine, targets, window=WINDOW, now=T0).delivered == 1
    (key, generic), (_, slack) = receiver.received
    assert key == generic["idempotency_key"] == outbox.idempotency_key(1)
    assert generic["top_features"][0]["feature"] == "torque_nm" and generic["nearest_rule"]["rule"] == "power"
    assert generic["threshold"] == 0.3 and generic["machine_type"] == "L"
    assert "Predicted failure on machine M-1" in slack["text"]
    assert "1 reading(s) past the threshold from 2026-01-05T08:00:00+00:00" in slack["text"]
    assert "torque_nm +1.200" in slack["blocks"][1]["text"]["text"]


def test_one_target_down_does_not_resend_to_the_other(engine, receiver: Receiver) -> None:
    enqueue(engine, events(1, 2))
    dead = Target(f"http://127.0.0.1:{free_port()}/hook")
    first = outbox.deliver_due(engine, [Target(receiver.url), dead], window=WINDOW, now=T0)
    assert first.failed == 2 and len(receiver.received) == 2
    rows = statuses(engine)
    assert (rows["status"] == "pending").all()
    assert rows["last_error"].str.contains("unreachable").all()
    # the live target is not posted again on the retry
    outbox.deliver_due(engine, [Target(receiver.url), dead], window=WINDOW, now=T0 + timedelta(hours=1))
    assert len(receiver.received) == 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ALERT = json.loads(outbox.alert_payload(events(1, 1).to_dict("records")[0]))


@pytest.mark.parametrize(
    ("status", "delay", "message", "permanent"),
    [
        (500, 0.0, "failed: HTTP 500 Internal Server Error (receiver says no)", False),
        (404, 0.0, "refused the alert: HTTP 404 Not Found (receiver says no); check its URL", True),
        (200, 2.0, "did not answer within 0.5 s", False),
    ],
)
def test_error_answers_and_slow_receivers_get_clear_messages(
    receiver: Receiver, status: int, delay: float, message: str, permanent: bool
) -> None:
    receiver.status, receiver.delay_s = status, delay
    with pytest.raises(DeliveryFailed) as caught:
        post(Target(receiver.url), ALERT, "k", timeout=0.5)
    assert message in str(caught.value) and caught.value.permanent is permanent
    assert "/hook" not in str(caught.value)  # the path (a Slack secret) never shows


def test_unreachable_webhook_and_bad_urls() -> None:
    with pytest.raises(DeliveryFailed, match=r"webhook json:http://127.0.0.1:\d+ unreachable \(.*refused"):
        post(Target(f"http://127.0.0.1:{free_port()}/x"), ALERT, "k", timeout=1.0)
    with pytest.raises(MfdError, match="is not an http"):
        parse_targets("ftp://example.com/hook")
    assert [t.kind for t in parse_targets("http://a/x, http://b/y", "https://hooks.slack.com/s")] == [
        "json",
        "json",
        "slack",
    ]


def test_without_targets_pending_alerts_are_dropped_and_it_says_so(engine) -> None:
    enqueue(engine, events(1, 2))
    report = outbox.deliver_due(engine, [], window=WINDOW, now=T0)
    assert report.delivered == 0 and "no webhook configured" in report.line()
    assert "2 pending alert(s) dropped" in report.line()
    assert outbox.outbox_status(engine) == {}


def test_without_targets_pending_alerts_are_dropped_and_delivered_ones_kept(
    engine, receiver: Receiver
) -> None:
    enqueue(engine, events(1, 2))
    outbox.deliver_due(engine, [Target(receiver.url)], window=WINDOW, now=T0)
    enqueue(engine, events(10, 3))
    assert outbox.drop_undeliverable(engine) == 3
    assert outbox.outbox_status(engine) == {"delivered": 2}
    assert outbox.drop_undeliverable(engine) == 0
