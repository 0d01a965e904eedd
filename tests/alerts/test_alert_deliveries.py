"""The `alert_deliveries` asset posts the outbox to the configured webhooks (a real local receiver); a Slack
webhook URL given in the environment reaches the resource as an EnvVar, never in the code location."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster_shared.serdes import serialize_value
from receiver import Receiver
from test_outbox import events

from mfd.alerts import outbox
from mfd.settings import Settings
from mfd.storage.tables import ensure_alert_tables
from mfd_assets.detection import alert_deliveries
from mfd_resources import AlertWebhooks, ReadingsStore, resources_for


def test_the_asset_delivers_due_alerts_and_reports_them(tmp_path: Path) -> None:
    store = ReadingsStore(url=f"sqlite:///{tmp_path / 'readings.db'}")
    ensure_alert_tables(store.engine)
    with store.engine.begin() as conn:
        outbox.enqueue(conn, events(1, 3), datetime.now(UTC))
    receiver = Receiver().start()
    try:
        hooks = AlertWebhooks(webhook_urls=receiver.url, slack_webhook_urls=receiver.url + "/slack")
        result = dg.materialize(
            [alert_deliveries], resources={"readings_store": store, "alert_webhooks": hooks}
        )
    finally:
        receiver.stop()
    (materialization,) = result.asset_materializations_for_node("alert_deliveries")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["delivered"], meta["failed"], meta["pending"]) == (3, 0, 0)
    assert meta["outbox_by_status"] == {"delivered": 3}
    assert len(receiver.received) == 6  # JSON and Slack, each alert once


def test_with_no_webhook_the_asset_drops_pending_alerts_and_says_so(tmp_path: Path) -> None:
    """The run alert_delivery_sensor starts once when no webhook is set: the UI's metadata says why the
    outbox holds nothing."""
    store = ReadingsStore(url=f"sqlite:///{tmp_path / 'readings.db'}")
    ensure_alert_tables(store.engine)
    with store.engine.begin() as conn:
        outbox.enqueue(conn, events(1, 2), datetime.now(UTC))
    result = dg.materialize(
        [alert_deliveries], resources={"readings_store": store, "alert_webhooks": AlertWebhooks()}
    )
    (materialization,) = result.asset_materializations_for_node("alert_deliveries")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert "no webhook configured" in meta["summary"] and "2 pending alert(s) dropped" in meta["summary"]
    assert meta["outbox_by_status"] == {} and meta["pending"] == 0


def test_a_slack_url_never_shows_in_the_code_location(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = "https://hooks.slack.com/services/T000/B000/s3cr3tT0k3n"
    monkeypatch.setenv("MFD_SLACK_WEBHOOK_URLS", secret)
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    resources = resources_for(Settings())
    snapshot = serialize_value(
        RepositorySnap.from_def(dg.Definitions(resources=resources).get_repository_def())
    )
    assert "s3cr3tT0k3n" not in snapshot and "MFD_SLACK_WEBHOOK_URLS" in snapshot
