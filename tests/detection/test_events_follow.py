"""`mfd events` shows each event's SHAP features, nearest rule and alert status; `--follow` prints new
events as they arrive (the embedded SQLite database, no services)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "alerts"))
from receiver import Receiver  # noqa: E402 - tests/alerts/receiver.py

from mfd.alerts import outbox
from mfd.alerts.webhooks import Target
from mfd.cli.events import deliver, follow
from mfd.cli.main import main
from mfd.storage.bulk import BulkWriter
from mfd.storage.readings import create_engine
from mfd.storage.tables import ensure_alert_tables, ensure_detection_tables, failure_events

NOW = datetime.now(UTC)


def add_event(engine, reading_id: int, machine: str) -> None:
    features = json.dumps([{"feature": "strain_min_nm", "value": 12500.0, "attribution": 2.5}])
    event = pd.DataFrame(
        {
            "reading_id": [reading_id],
            "machine_id": [machine],
            "machine_type": ["M"],
            "timestamp": [NOW - timedelta(minutes=1)],
            "probability": [0.93],
            "threshold": [0.27],
            "model_name": ["m"],
            "model_version": ["4"],
            "top_features": [features],
            "nearest_rule": [
                {
                    "rule": "overstrain",
                    "fires": True,
                    "margin": -0.0417,
                    "detail": "wear x torque 12500 min.Nm",
                }
            ],
            "explainer": ["shap tree"],
        }
    )
    with engine.begin() as conn:
        BulkWriter(
            conn,
            failure_events,
            ("reading_id", "machine_id", "timestamp", "probability", "top_features"),
            conflict=("reading_id",),
            constants={"model_name": "m", "model_version": "4", "detected_at": NOW},
        ).write_frame(event)
        outbox.enqueue(conn, event, NOW)


@pytest.fixture
def engine(tmp_path: Path):
    engine = create_engine(f"sqlite:///{tmp_path / 'readings.db'}")
    ensure_detection_tables(engine)
    ensure_alert_tables(engine)
    return engine


def test_events_show_the_explanation_and_follow_streams_new_ones(
    engine, tmp_path, monkeypatch, capsys
) -> None:
    add_event(engine, 1, "M-1")
    printed: list[str] = []
    follow(
        engine,
        NOW - timedelta(hours=1),
        0.01,
        out=printed.append,
        polls=3,
        sleep=lambda _: add_event(engine, len(printed) + 1, f"M-{len(printed) + 1}"),
    )
    assert len(printed) == 3
    assert "top SHAP features" in printed[0] and "M-1" in printed[0]
    assert "M-2" in printed[1] and "M-1" not in printed[1] and "top SHAP features" not in printed[1]
    assert "M-3" in printed[2] and "M-2" not in printed[2]

    monkeypatch.setenv("MFD_DATABASE_URL", str(engine.url))
    assert main(["events", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert "strain_min_nm +2.50" in out
    assert "overstrain fires (margin -4.2%): wear x torque 12500 min.Nm" in out
    assert "pending" in out and "0.27" in out
    assert main(["events", "--follow", "--interval", "0"]) == 2
    assert "--interval must be positive" in capsys.readouterr().err


def test_deliver_posts_due_alerts_each_pass(engine, monkeypatch, capsys) -> None:
    add_event(engine, 1, "M-1")
    receiver = Receiver().start()
    lines: list[str] = []
    try:
        deliver(
            engine,
            [Target(receiver.url)],
            timedelta(minutes=15),
            2.0,
            0.01,
            out=lines.append,
            polls=2,
            sleep=lambda _: add_event(engine, 2, "M-2"),
        )
    finally:
        receiver.stop()
    assert [line.split(" ", 1)[1] for line in lines] == [
        "1 delivered, 0 suppressed as duplicates, 0 failed"
    ] * 2
    assert sorted(b["machine_id"] for _, b in receiver.received) == ["M-1", "M-2"]

    monkeypatch.setenv("MFD_DATABASE_URL", str(engine.url))
    monkeypatch.delenv("MFD_WEBHOOK_URLS", raising=False)
    monkeypatch.delenv("MFD_SLACK_WEBHOOK_URLS", raising=False)
    assert main(["events", "--deliver"]) == 2
    assert "--deliver needs MFD_WEBHOOK_URLS" in capsys.readouterr().err
