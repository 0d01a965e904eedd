"""An escalated alarm reaches the webhooks through the outbox: posted to a real local receiver as generic
JSON and as a Slack message, not suppressed behind the failure alert of the same machine a minute before,
and posted once."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "alerts"))
from receiver import Receiver  # noqa: E402

from mfd.alarms import escalate_due, update_alarms  # noqa: E402
from mfd.alerts import outbox  # noqa: E402
from mfd.alerts.webhooks import parse_targets  # noqa: E402
from mfd.storage.readings import create_engine, ensure_tables  # noqa: E402


def test_escalation_is_delivered_once_beside_the_failure_alert(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'readings.db'}")
    ensure_tables(engine)
    now = datetime.now(UTC)
    scored = pd.DataFrame(
        {
            "reading_id": [1, 2, 3],
            "machine_id": "M-1",
            "machine_type": "L",
            "timestamp": [now - timedelta(minutes=40 - i) for i in range(3)],
            "probability": [0.93, 0.95, 0.97],
            "label": [1, 1, 1],
        }
    )
    update_alarms(engine, scored, now=now - timedelta(minutes=37))
    event = scored.tail(1).assign(
        threshold=0.5,
        model_name="m",
        model_version="1",
        top_features="[]",
        nearest_rule=[None],
    )
    with engine.begin() as conn:  # the failure alert of the machine's last reading, as detection writes it
        outbox.enqueue(conn, event.assign(timestamp=now - timedelta(minutes=1)), now)
    assert escalate_due(engine, timedelta(minutes=30), now=now) == [1]
    receiver = Receiver().start()
    try:
        targets = parse_targets(receiver.url, receiver.url)  # one generic JSON target, one Slack
        report = outbox.deliver_due(engine, targets, window=timedelta(minutes=15), now=now)
        again = outbox.deliver_due(
            engine, targets, window=timedelta(minutes=15), now=now + timedelta(minutes=1)
        )
    finally:
        receiver.stop()
    assert (report.delivered, report.suppressed, report.failed) == (2, 0, 0)
    assert again.delivered == again.suppressed == 0
    keys = sorted(key for key, _ in receiver.received)
    assert keys == ["mfd-alarm-escalation-1"] * 2 + ["mfd-failure-event-3"] * 2
    bodies = [body for key, body in receiver.received if key == "mfd-alarm-escalation-1"]
    generic = next(b for b in bodies if "event" in b)
    slack = next(b for b in bodies if "text" in b)
    assert (generic["event"], generic["alarm_id"], generic["machine_id"], generic["count"]) == (
        "alarm_escalated",
        1,
        "M-1",
        3,
    )
    assert "Alarm 1 on machine M-1 unacknowledged for 37 min" in slack["text"]
    assert json.loads(json.dumps(generic))["peak_risk"] == 0.97
    with engine.connect() as conn:
        assert (
            conn.execute(sa.text("select count(*) from alert_outbox where status = 'delivered'")).scalar()
            == 2
        )
