"""`readings_stream`: the MQTT stream `mfd stream` consumes, an external asset observed every few seconds
(rows stored, scored, rejected, lag, last message time) so the UI shows its freshness. Computation:
`mfd.streaming.status`."""

from __future__ import annotations

import dagster as dg

from mfd.streaming.status import STATUS_FILE, observation
from mfd_resources import ReadingsStore, Tracking

GROUP = "ingestion"


READINGS_STREAM_SPEC = dg.AssetSpec(
    "readings_stream",
    group_name=GROUP,
    kinds={"mqtt", "postgres"},
    description="Readings published to the plant's MQTT broker (plant/<machine>/readings), stored and scored "
    "by `mfd stream` as they arrive; refused ones in rejected_readings. Observed from the consumer's status "
    "file under MFD_HOME and the database.",
)


@dg.multi_observable_source_asset(name="readings_stream", specs=[READINGS_STREAM_SPEC])
def readings_stream(readings_store: ReadingsStore, tracking: Tracking) -> dg.ObserveResult:
    seen = observation(tracking.local_home / STATUS_FILE, readings_store.engine)
    return dg.ObserveResult(
        data_version=dg.DataVersion(f"{seen['rows']}-{seen['rejected']}"),
        metadata={"dagster/row_count": seen["rows"], **seen},
    )
