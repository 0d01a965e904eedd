"""alert_delivery_sensor starts a delivery pass only when a webhook is set and an alert is due."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd

from mfd.alerts import outbox
from mfd.storage.readings import create_engine
from mfd.storage.tables import ensure_alert_tables
from mfd_resources import ReadingsStore
from mfd_resources.alerts import AlertWebhooks
from mfd_sensors.alerts import alert_delivery_sensor


def _event(reading_id: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "reading_id": [reading_id],
            "machine_id": ["M-1"],
            "machine_type": ["L"],
            "timestamp": [datetime(2026, 1, 5, 8, 0, tzinfo=UTC)],
            "probability": [0.9],
            "threshold": [0.3],
            "model_name": ["m"],
            "model_version": ["1"],
            "top_features": [json.dumps([])],
            "nearest_rule": [{"rule": "power", "fires": True, "margin": 0.1, "detail": "power 9900 W"}],
            "explainer": ["shap tree"],
        }
    )


def _tick(
    url: str, webhooks: str, cursor: str | None = None
) -> tuple[dg.RunRequest | dg.SensorResult | dg.SkipReason, str | None]:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance,
            cursor=cursor,
            resources={
                "readings_store": ReadingsStore(url=url),
                "alert_webhooks": AlertWebhooks(webhook_urls=webhooks),
            },
        )
        result = alert_delivery_sensor(context)
        return result, result.cursor if isinstance(result, dg.SensorResult) else context.cursor


def test_a_due_alert_with_a_webhook_starts_one_delivery_run(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'readings.db'}"
    engine = create_engine(url)
    ensure_alert_tables(engine)
    hook = "http://127.0.0.1:9/alerts"

    assert "no alert due" in _tick(url, hook)[0].skip_message
    with engine.begin() as conn:
        outbox.enqueue(conn, _event(7), datetime.now(UTC) - timedelta(seconds=1))
    # No webhook: the first tick says so once, with one delivery run (its asset metadata says it in the UI).
    first, cursor = _tick(url, "")
    [request] = first.run_requests
    assert request.run_key.startswith("no-target-") and cursor == "no-target"
    again, cursor = _tick(url, "", cursor)
    skipped = again.skip_message
    assert "no webhook configured" in skipped and "1 pending alert(s) dropped" in skipped
    assert outbox.outbox_status(engine) == {}  # nowhere to go: the outbox does not accumulate
    with engine.begin() as conn:
        outbox.enqueue(conn, _event(8), datetime.now(UTC) - timedelta(seconds=1))
    assert "1 pending alert(s) dropped" in _tick(url, "", cursor)[0].skip_message
    with engine.begin() as conn:
        outbox.enqueue(conn, _event(9), datetime.now(UTC) - timedelta(seconds=1))
    request, cursor = _tick(url, hook, cursor)
    assert isinstance(request, dg.RunRequest) and request.tags["mfd/first_due_alert"] and cursor == ""
