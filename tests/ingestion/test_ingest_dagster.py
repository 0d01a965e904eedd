"""The ingestion wiring: incoming_files_sensor on the real S3 server, raw_readings/peripheral_readings
materialized per partition with their blocking expectations, and the observed readings table."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest
from dagster_aws.s3 import S3Resource

from mfd.generator import generate_peripheral, generate_readings, to_csv_bytes
from mfd.ingestion.incoming import IncomingCursor, look, object_key, partition_key
from mfd.services import S3Server
from mfd.storage import readings as store
from mfd.storage.objects import Objects, S3Objects
from mfd_assets.ingestion import (
    incoming_files,
    peripheral_files,
    peripheral_readings,
    peripheral_readings_expectations,
    raw_readings,
    raw_readings_expectations,
    readings,
)
from mfd_assets.jobs import ingest_readings_job
from mfd_resources import ReadingsStore, S3ObjectStore
from mfd_sensors.compat import INVALID_PARTITION_SUBSTRINGS
from mfd_sensors.incoming import incoming_files_sensor, route


@pytest.fixture
def object_store(s3: S3Server, bucket: str) -> S3ObjectStore:
    return S3ObjectStore(
        s3=S3Resource(
            endpoint_url=s3.endpoint_url,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key,
            region_name=s3.region,
        ),
        bucket=bucket,
    )


@pytest.fixture
def objects(object_store: S3ObjectStore) -> Objects:
    return object_store.objects()


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_readings(machines=5, rows=600, seed=11)


def _rows(table: dg.TableMetadataValue) -> list[dict]:
    return [record.data for record in table.records]


def _columns(table: dg.TableMetadataValue) -> list[str]:
    return [column.name for column in table.schema.columns]


def _column(table: dg.TableMetadataValue, name: str) -> list[object]:
    return [row.get(name) for row in _rows(table)]


def _tick(
    object_store: S3ObjectStore, cursor: str | None
) -> tuple[dg.SensorResult | dg.SkipReason, str | None]:
    time.sleep(S3Objects.settle.total_seconds())  # what was just put has settled (its second has passed)
    with dg.build_sensor_context(
        instance=dg.DagsterInstance.ephemeral(), cursor=cursor, resources={"object_store": object_store}
    ) as context:
        result = incoming_files_sensor(context)
    return result, result.cursor if isinstance(result, dg.SensorResult) else cursor


def test_sensor_new_file_then_nothing_then_changed_file(
    object_store: S3ObjectStore, objects: Objects, frame: pd.DataFrame
) -> None:
    objects.put("incoming/a.csv", to_csv_bytes(frame.iloc[:300]))
    first, cursor = _tick(object_store, None)
    assert isinstance(first, dg.SensorResult) and len(first.run_requests) == 1
    request = first.run_requests[0]
    etag = objects.list("incoming/")[0].etag
    assert request.partition_key == "incoming/a.csv" and request.run_key == f"incoming/a.csv@{etag}"
    assert request.job_name == "ingest_readings_job"
    [added] = first.dynamic_partitions_requests
    assert added.partitions_def_name == incoming_files.name and list(added.partition_keys) == [
        "incoming/a.csv"
    ]

    same, cursor = _tick(object_store, cursor)
    assert isinstance(same, dg.SkipReason)

    objects.put("incoming/a.csv", to_csv_bytes(frame))  # changed content, same name
    changed, cursor = _tick(object_store, cursor)
    assert isinstance(changed, dg.SensorResult) and len(changed.run_requests) == 1
    assert changed.run_requests[0].partition_key == "incoming/a.csv"
    assert changed.run_requests[0].run_key != request.run_key

    objects.put("incoming/peripheral/p.csv", to_csv_bytes(generate_peripheral(frame, seed=1)))
    peripheral, _ = _tick(object_store, cursor)
    assert peripheral.run_requests[0].job_name == "ingest_peripheral_job"
    assert peripheral.dynamic_partitions_requests[0].partitions_def_name == peripheral_files.name


def test_cursor_handles_timestamp_ties_and_caps_each_tick(objects: Objects) -> None:
    for name in "abcde":  # uploaded within a second or two: S3 last-modified times tie
        objects.put(f"incoming/{name}.csv", name.encode())
    time.sleep(objects.settle.total_seconds())
    cursor, now = IncomingCursor(), datetime.now(UTC)
    seen: list[str] = []
    for _ in range(3):
        tick = look(objects, IncomingCursor.parse(cursor.dumps()), now, limit=2)
        assert len(tick.new) <= 2
        seen += [o.key for o in tick.new]
        cursor = tick.cursor
    assert seen == [f"incoming/{n}.csv" for n in "abcde"]
    assert look(objects, cursor, now, limit=2).new == []
    objects.put("incoming/c.csv", b"changed")  # a new version, in a later second than any handed out
    later = datetime.now(UTC) + objects.settle
    assert [o.key for o in look(objects, cursor, later, limit=2).new] == ["incoming/c.csv"]


def _resources(pg_url: str, object_store: S3ObjectStore) -> dict[str, dg.ConfigurableResource]:
    return {"readings_store": ReadingsStore(url=pg_url), "object_store": object_store}


def _materialize(
    assets: list, partitions: dg.DynamicPartitionsDefinition, key: str, resources: dict, **kwargs
) -> tuple[dg.ExecuteInProcessResult, dg.DagsterInstance]:
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(partitions.name, [key])
    result = dg.materialize(assets, partition_key=key, resources=resources, instance=instance, **kwargs)
    return result, instance


def test_raw_readings_partition_loads_file_and_passes_expectations(
    pg_url: str, object_store: S3ObjectStore, objects: Objects, frame: pd.DataFrame
) -> None:
    key = "incoming/fleet.csv"
    objects.put(key, to_csv_bytes(pd.concat([frame, frame.iloc[:10]])))
    result, _ = _materialize(
        [raw_readings, raw_readings_expectations], incoming_files, key, _resources(pg_url, object_store)
    )
    assert result.success
    [materialization] = result.asset_materializations_for_node("raw_readings")
    meta = {k: v.value for k, v in materialization.metadata.items()}
    assert (meta["rows_read"], meta["rows_loaded"], meta["rows_duplicate"], meta["rows_rejected"]) == (
        610,
        600,
        10,
        0,
    )
    assert meta["status"] == "processed" and meta["filed_as"].startswith("processed/fleet@")
    assert "machine_id" in _columns(meta["preview"]) and meta["rows_per_second"] > 0
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["rows_checked"].value == 600
    assert "expect_compound_columns_to_be_unique" in _column(
        check.metadata["expectations"].value, "expectation"
    )
    assert store.count_readings(ReadingsStore(url=pg_url).engine) == 600

    defs = dg.Definitions(
        assets=[readings],
        jobs=[dg.define_asset_job("observe_readings", selection=[readings.key])],
        resources=_resources(pg_url, object_store),
    )
    observed = defs.resolve_job_def("observe_readings").execute_in_process(
        instance=dg.DagsterInstance.ephemeral()
    )
    [observation] = observed.asset_observations_for_node("readings")
    assert observation.metadata["dagster/row_count"].value == 600
    assert observation.metadata["max_id"].value >= 600


def test_expectations_fail_when_timestamps_go_backwards(
    pg_url: str, object_store: S3ObjectStore, objects: Objects, frame: pd.DataFrame
) -> None:
    key = "incoming/shuffled.csv"
    objects.put(key, to_csv_bytes(frame.iloc[::-1]))
    result, _ = _materialize(
        [raw_readings, raw_readings_expectations],
        incoming_files,
        key,
        _resources(pg_url, object_store),
        raise_on_error=False,
    )
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    [row] = [
        r
        for r in _rows(check.metadata["expectations"].value)
        if r["expectation"] == "expect_column_values_to_be_between"
        and r["column"] == "seconds_since_previous"
    ]
    assert row["success"] is False


def test_rejected_file_fails_the_check_with_its_reason(
    pg_url: str, object_store: S3ObjectStore, objects: Objects, frame: pd.DataFrame
) -> None:
    key = "incoming/broken.csv"
    objects.put(key, to_csv_bytes(frame.drop(columns=["torque_nm"])))
    result, _ = _materialize(
        [raw_readings, raw_readings_expectations],
        incoming_files,
        key,
        _resources(pg_url, object_store),
        raise_on_error=False,
    )
    meta = result.asset_materializations_for_node("raw_readings")[0].metadata
    assert meta["status"].value == "rejected" and meta["reason"].value["rule"] == "missing_columns"
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.metadata["reason"].value["columns"] == ["torque_nm"]
    assert meta["filed_as"].value.startswith("rejected/broken@")
    assert objects.exists(f"{meta['filed_as'].value}.reason.json")


def test_deleted_file_fails_the_run_with_a_clear_error(pg_url: str, object_store: S3ObjectStore) -> None:
    result, _ = _materialize(
        [raw_readings],
        incoming_files,
        "incoming/gone.csv",
        _resources(pg_url, object_store),
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "incoming/gone.csv was deleted before it could be read" in str(failure.step_failure_data.error)


def test_peripheral_file_as_a_raw_readings_partition_is_refused(
    pg_url: str, object_store: S3ObjectStore
) -> None:
    key = "incoming/peripheral/devices.csv"
    result, _ = _materialize(
        [raw_readings], incoming_files, key, _resources(pg_url, object_store), raise_on_error=False
    )
    [failure] = [e for e in result.all_events if e.is_step_failure]
    assert "materialize it as a partition of peripheral_readings" in str(failure.step_failure_data.error)


def test_peripheral_readings_partition(
    pg_url: str, object_store: S3ObjectStore, objects: Objects, frame: pd.DataFrame
) -> None:
    key = "incoming/peripheral/devices.csv"
    devices = generate_peripheral(frame, seed=3)
    objects.put(key, to_csv_bytes(devices))
    result, _ = _materialize(
        [peripheral_readings, peripheral_readings_expectations],
        peripheral_files,
        key,
        _resources(pg_url, object_store),
    )
    meta = result.asset_materializations_for_node("peripheral_readings")[0].metadata
    assert meta["rows_loaded"].value == len(devices)
    assert result.get_asset_check_evaluations()[0].passed


def test_route_sends_files_where_the_sensor_does_and_every_key_gets_a_partition() -> None:
    assert route("incoming/a.csv").job.name == "ingest_readings_job"
    assert route("incoming/a.csv").partitions.name == incoming_files.name
    assert route("incoming/peripheral/p.csv").job.name == "ingest_peripheral_job"
    assert route("incoming/peripheral/p.csv").partitions.name == peripheral_files.name
    for bad in INVALID_PARTITION_SUBSTRINGS:
        key = f"incoming/a{bad}b.csv"
        with pytest.raises(dg.DagsterInvalidDefinitionError):  # the compat list is Dagster's own rule
            dg.StaticPartitionsDefinition([key])
        dg.StaticPartitionsDefinition([partition_key(key)])  # the escaped key is one Dagster takes
        assert object_key(partition_key(key)) == key
    dg.StaticPartitionsDefinition(["incoming/a.csv", "incoming/peripheral/p.csv"])
    assert partition_key("incoming/a.csv") == "incoming/a.csv"  # ordinary keys are their own partition


def test_sensor_path_a_file_over_the_maximum_size_is_rejected_unread(
    pg_url: str, object_store: S3ObjectStore, objects: Objects, frame: pd.DataFrame
) -> None:
    """incoming_files_sensor requests the file's run like any other; the run (the stack's ReadingsStore with
    MFD_MAX_FILE_BYTES) rejects it with the limit and its size, files it whole under rejected/, loads nothing."""
    data = to_csv_bytes(frame)
    objects.put("incoming/huge.csv", data)
    tick, _ = _tick(object_store, None)
    [request] = tick.run_requests
    assert request.tags["mfd/bytes"] == str(len(data))
    store_limited = ReadingsStore(url=pg_url, max_file_bytes=len(data) - 1)
    engine = store_limited.engine
    before = store.count_readings(engine)
    defs = dg.Definitions(
        assets=[raw_readings, raw_readings_expectations],
        jobs=[ingest_readings_job],
        resources={"readings_store": store_limited, "object_store": object_store},
    )
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(incoming_files.name, [request.partition_key])
    result = defs.resolve_job_def(request.job_name).execute_in_process(
        instance=instance, partition_key=request.partition_key, tags=request.tags, raise_on_error=False
    )
    meta = result.asset_materializations_for_node("raw_readings")[0].metadata
    reason = meta["reason"].value
    assert meta["status"].value == "rejected" and reason["rule"] == "file_too_large"
    assert f"{len(data):,} bytes" in reason["message"] and f"{len(data) - 1:,}" in reason["message"]
    assert meta["rows_read"].value == 0 and store.count_readings(engine) == before
    assert objects.get(meta["filed_as"].value) == data and not objects.exists("incoming/huge.csv")
    assert json.loads(objects.get(f"{meta['filed_as'].value}.reason.json"))["rule"] == "file_too_large"
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
