"""`readings_stream`: the external asset's observation reports the consumer's counters and the rejections."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import sqlalchemy as sa

from mfd.storage.readings import create_engine, ensure_tables
from mfd.streaming.consumer import Status
from mfd.streaming.status import STATUS_FILE
from mfd_assets.streaming import readings_stream
from mfd_resources import ReadingsStore, Tracking


def test_mqtt_readings_stream_observation_reports_rows_lag_and_rejections(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'readings.db'}"
    engine = create_engine(url)
    ensure_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO rejected_readings (message_key, topic, reason, payload, received_at) "
                "VALUES ('k:message', 'plant/m/readings', 'not JSON', 'x', '2026-01-01 00:00:00')"
            )
        )
    Status(readings=120, scored=120, lag_seconds=0.4, last_message_at="2026-12-07T10:00:00+00:00").write(
        tmp_path / STATUS_FILE
    )
    defs = dg.Definitions(
        assets=[readings_stream],
        jobs=[dg.define_asset_job("observe_stream", selection=[readings_stream.key])],
        resources={
            "readings_store": ReadingsStore(url=url),
            "tracking": Tracking(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", home=str(tmp_path)),
        },
    )
    result = defs.resolve_job_def("observe_stream").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    assert result.success
    (observed,) = result.asset_observations_for_node("readings_stream")
    metadata = {k: v.value for k, v in observed.metadata.items()}
    assert metadata["dagster/row_count"] == 120
    assert metadata["rejected"] == 1
    assert metadata["lag_seconds"] == 0.4
    assert metadata["last_message_at"] == "2026-12-07T10:00:00+00:00"
    assert 0 <= metadata["status_age_seconds"] < 3600
