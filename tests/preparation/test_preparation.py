"""Preparation: the peripheral join, physics features, IQR screening, clusters, the GX suite, the assets."""

from __future__ import annotations

import base64
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mfd.errors import MfdError
from mfd.features import FEATURE_COLUMNS, feature_matrix
from mfd.plots import png_markdown, table_markdown
from mfd.preparation.clusters import cluster_machines, cluster_scatter
from mfd.preparation.expectations import validate_training_set
from mfd.preparation.training_set import (
    TRAINING_COLUMNS,
    build_training_set,
    outlier_boxplot,
    remove_outliers_iqr,
    rows_with_peripheral,
)
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import FAILURE_MODE_COLUMNS
from mfd.storage import readings as store
from mfd_assets.preparation import cleaned_set, machine_clusters, training_set, training_set_expectations
from mfd_resources import ReadingsStore

T0 = pd.Timestamp("2024-05-01 12:00", tz="UTC")
NO_PERIPHERAL = pd.DataFrame(
    {
        "machine_id": pd.Series(dtype="string"),
        "timestamp": pd.Series(dtype="datetime64[ns, UTC]"),
        "power_meter_w": pd.Series(dtype="float64"),
        "vibration_mm_s": pd.Series(dtype="float64"),
        "ambient_temperature_k": pd.Series(dtype="float64"),
    }
)


@pytest.fixture(scope="module")
def ai4i() -> pd.DataFrame:
    return load_ai4i()


@pytest.fixture(scope="module")
def ai4i_training_set(ai4i: pd.DataFrame) -> pd.DataFrame:
    return build_training_set(ai4i, NO_PERIPHERAL, "5min")


def reading(
    machine_id: str, at: pd.Timestamp, label: int | None = 0, machine_type: str = "L", **values
) -> dict:
    row = {
        "machine_id": machine_id,
        "timestamp": at,
        "machine_type": machine_type,
        "air_temperature_k": 300.0,
        "process_temperature_k": 310.0,
        "rotational_speed_rpm": 1500.0,
        "torque_nm": 40.0,
        "tool_wear_min": 100.0,
        "machine_failure": label,
    }
    return {**row, **values}


def peripheral(machine_id: str, at: pd.Timestamp, power: float) -> dict:
    return {
        "machine_id": machine_id,
        "timestamp": at,
        "power_meter_w": power,
        "vibration_mm_s": 1.0,
        "ambient_temperature_k": 295.0,
    }


def test_join_takes_nearest_earlier_peripheral_within_tolerance_per_machine() -> None:
    readings = pd.DataFrame(
        [
            reading("A", T0),
            reading("B", T0),
            reading("A", T0 + pd.Timedelta("10min"), label=1),
            reading("B", T0 + pd.Timedelta("10min")),
            reading("A", T0 + pd.Timedelta("20min"), label=None),  # unlabelled: not training data
        ]
    )
    periph = pd.DataFrame(
        [
            peripheral("A", T0 - pd.Timedelta("1min"), 1.0),
            peripheral("A", T0 - pd.Timedelta("30s"), 2.0),  # nearest earlier for A@T0
            peripheral("A", T0 + pd.Timedelta("1min"), 3.0),  # later than A@T0: never joined to it
            peripheral("B", T0 - pd.Timedelta("6min"), 4.0),  # older than the tolerance for B@T0
            peripheral("B", T0 + pd.Timedelta("9min"), 5.0),  # nearest earlier for B@T0+10
            peripheral("B", T0 + pd.Timedelta("10min30s"), 6.0),  # nearer, but later: never joined
        ]
    )
    out = build_training_set(readings, periph, "5min")

    assert list(out.columns) == [c for c in TRAINING_COLUMNS if c != "id"]
    assert len(out) == 4
    power = out.set_index(["machine_id", "timestamp"])["power_meter_w"]
    assert power[("A", T0)] == 2.0
    assert np.isnan(power[("B", T0)])
    assert np.isnan(power[("A", T0 + pd.Timedelta("10min"))])  # A's last peripheral is 9 min older
    assert power[("B", T0 + pd.Timedelta("10min"))] == 5.0
    assert rows_with_peripheral(out) == 2
    # A wider tolerance reaches the older rows, still only backwards and only from the same machine.
    wide = build_training_set(readings, periph, "10min")
    wide_power = wide.set_index(["machine_id", "timestamp"])["power_meter_w"]
    assert wide_power[("B", T0)] == 4.0
    assert wide_power[("A", T0 + pd.Timedelta("10min"))] == 3.0
    # Input order is kept.
    assert list(out["machine_id"]) == ["A", "B", "A", "B"]


def test_physics_features_and_model_inputs_exclude_failure_modes() -> None:
    readings = pd.DataFrame(
        [reading("A", T0, air_temperature_k=300.5, process_temperature_k=309.0, torque_nm=50.0,
                 rotational_speed_rpm=1200.0, tool_wear_min=200.0, twf=1, osf=1)]
    )  # fmt: skip
    out = build_training_set(readings, NO_PERIPHERAL, "1min")
    row = out.iloc[0]
    assert row["temperature_difference_k"] == pytest.approx(8.5)
    assert row["power_w"] == pytest.approx(50.0 * 1200.0 * 2 * np.pi / 60)
    assert row["strain_min_nm"] == pytest.approx(10_000.0)
    assert row["twf"] == 1 and row["osf"] == 1 and pd.isna(row["hdf"])
    inputs = feature_matrix(out)
    assert list(inputs.columns) == list(FEATURE_COLUMNS)
    assert not set(FAILURE_MODE_COLUMNS) & set(inputs.columns)


def test_bad_inputs_name_what_to_fix() -> None:
    readings = pd.DataFrame([reading("A", T0)])
    with pytest.raises(MfdError, match="torque_nm"):
        build_training_set(readings.drop(columns=["torque_nm"]), NO_PERIPHERAL, "1min")
    with pytest.raises(MfdError, match="vibration_mm_s"):
        build_training_set(readings, NO_PERIPHERAL.drop(columns=["vibration_mm_s"]), "1min")
    with pytest.raises(MfdError, match="no timestamp"):
        build_training_set(readings.assign(timestamp=pd.NaT), NO_PERIPHERAL, "1min")
    with pytest.raises(MfdError, match="not a duration"):
        build_training_set(readings, NO_PERIPHERAL, "five minutes")
    with pytest.raises(MfdError, match="negative"):
        build_training_set(readings, NO_PERIPHERAL, "-1min")
    with pytest.raises(MfdError, match="positive"):
        remove_outliers_iqr(build_training_set(readings, NO_PERIPHERAL, "1min"), k=0)


def test_iqr_removes_planted_outlier_per_machine_type_and_keeps_failures() -> None:
    rng = np.random.default_rng(7)
    rows = []
    for i in range(200):
        machine_type = "L" if i < 100 else "H"
        rpm = (1500.0 if machine_type == "L" else 2500.0) + rng.normal(0, 20)
        rows.append(reading(f"m{i}", T0 + pd.Timedelta(minutes=i), machine_type=machine_type,
                            rotational_speed_rpm=rpm, torque_nm=40 + rng.normal(0, 2),
                            air_temperature_k=300 + rng.normal(0, 1)))  # fmt: skip
    df = build_training_set(pd.DataFrame(rows), NO_PERIPHERAL, "1min")
    df.loc[5, "torque_nm"] = 120.0  # non-failure outlier: removed
    df.loc[6, ["torque_nm", "machine_failure"]] = [130.0, 1]  # failure just as extreme: kept
    df.loc[7, "rotational_speed_rpm"] = 2500.0  # normal for H, an outlier for L: removed
    cleaned, report = remove_outliers_iqr(df)

    assert report.rows_before == len(df) == len(cleaned) + report.rows_removed
    assert report.rows_after == len(cleaned)
    assert "m5" not in set(cleaned["machine_id"]) and "m7" not in set(cleaned["machine_id"])
    assert "m6" in set(cleaned["machine_id"])
    assert int(cleaned["machine_failure"].sum()) == report.failures_kept == 1
    assert report.naive_failures_dropped == 1
    assert report.by_feature.loc["torque_nm", "failures_outside_kept"] == 1
    assert report.by_feature.loc["torque_nm", "removed"] >= 1
    assert report.by_feature.loc["rotational_speed_rpm", "removed"] >= 1
    assert report.by_feature["removed"].sum() >= report.rows_removed
    assert set(report.bounds.index.get_level_values("machine_type")) == {"L", "H"}
    assert png_markdown(outlier_boxplot(df, cleaned), "box").startswith("![box](data:image/png;base64,")


def test_iqr_on_ai4i_keeps_every_failure(ai4i_training_set: pd.DataFrame) -> None:
    cleaned, report = remove_outliers_iqr(ai4i_training_set)
    assert int(cleaned["machine_failure"].sum()) == report.failures_kept == 339
    assert len(cleaned) + report.rows_removed == 10_000
    assert 0 < report.rows_removed < 1_000
    assert report.naive_failures_dropped > 0  # PWF/OSF failures sit outside the power/strain fences
    assert report.by_feature["failures_outside_kept"].sum() >= report.naive_failures_dropped


def test_clusters_have_requested_count_and_failure_rates(ai4i: pd.DataFrame) -> None:
    sample = ai4i.sample(n=800, random_state=1)
    clusters = cluster_machines(sample, n_clusters=3, sample_size=150, seed=3)
    assert list(clusters.table.index) == [0, 1, 2]
    assert set(np.unique(clusters.labels)) == {0, 1, 2}
    assert clusters.table["size"].sum() == len(sample) == len(clusters.labels)
    assert clusters.table["failures"].sum() == int(sample["machine_failure"].sum())
    assert clusters.table["failure_rate"].between(0, 1).all()
    assert len(clusters.embedding) <= 151 and clusters.embedding[["x", "y"]].notna().all().all()
    assert clusters.embedding["machine_failure"].sum() >= 1
    assert f"sample of {len(clusters.embedding)} rows" in clusters.method
    png = png_markdown(cluster_scatter(clusters), "map")
    assert base64.b64decode(png.split(",", 1)[1][:-1])[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(MfdError, match="n_clusters"):
        cluster_machines(sample, n_clusters=1)


def test_table_markdown_keeps_named_index() -> None:
    table = pd.DataFrame({"rows": [3, 4]}, index=pd.Index(["a", "b"], name="feature"))
    text = table_markdown(table)
    assert "feature" in text and "| a " in text
    assert "feature" not in table_markdown(table.reset_index(drop=True))


def test_expectations_pass_on_ai4i_and_fail_on_one_class_or_nulls(ai4i_training_set: pd.DataFrame) -> None:
    passed, summary = validate_training_set(ai4i_training_set)
    assert passed and summary["success"].all() and len(summary) > 20

    one_class = ai4i_training_set.assign(machine_failure=0)
    passed, summary = validate_training_set(one_class)
    failed = summary[~summary["success"]]
    assert not passed
    assert set(failed["expectation"]) == {
        "expect_column_mean_to_be_between",
        "expect_column_sum_to_be_between",
    }

    with_nan = ai4i_training_set.copy()
    with_nan.loc[[3, 4], "torque_nm"] = np.nan
    passed, summary = validate_training_set(with_nan)
    failed = summary[~summary["success"]]
    assert not passed
    assert list(failed["column"]) == ["torque_nm"] and failed["unexpected_count"].iloc[0] == 2

    passed, _ = validate_training_set(ai4i_training_set, min_failures=1_000)
    assert not passed


def load_database(url: str, readings: pd.DataFrame, peripheral_rows: pd.DataFrame) -> ReadingsStore:
    resource = ReadingsStore(url=url)
    assert store.insert_readings(resource.engine, readings) == len(readings)
    if len(peripheral_rows):
        with resource.engine.begin() as conn:
            conn.execute(sa.insert(store.peripheral_readings), peripheral_rows.to_dict("records"))
    return resource


def test_assets_materialize_over_the_readings_database(readings_url: str, ai4i: pd.DataFrame) -> None:
    first = ai4i.head(100)
    periph = pd.DataFrame(
        {
            "machine_id": first["machine_id"].astype(str),
            "timestamp": first["timestamp"] - pd.Timedelta("20s"),
            "power_meter_w": 5000.0,
            "vibration_mm_s": 2.5,
            "ambient_temperature_k": 296.0,
        }
    )
    resource = load_database(readings_url, ai4i, periph)
    result = dg.materialize(
        [training_set, training_set_expectations, cleaned_set, machine_clusters],
        resources={"readings_store": resource},
        run_config={"ops": {"machine_clusters": {"config": {"n_clusters": 3, "sample_size": 200}}}},
    )
    assert result.success
    [check] = result.get_asset_check_evaluations()
    assert check.passed and check.metadata["failed"].value == 0

    built = result.output_for_node("training_set")
    assert list(built.columns) == list(TRAINING_COLUMNS)
    assert len(built) == 10_000 and int(built["machine_failure"].sum()) == 339
    assert built.loc[:99, "power_meter_w"].eq(5000.0).all() and built.loc[100:, "power_meter_w"].isna().all()

    meta = {
        event.asset_key.path[-1]: event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }
    assert meta["training_set"]["rows_with_peripheral"].value == 100
    assert meta["training_set"]["failures"].value == 339
    cleaned = result.output_for_node("cleaned_set")
    assert int(cleaned["machine_failure"].sum()) == meta["cleaned_set"]["failures_kept"].value == 339
    assert meta["cleaned_set"]["rows_after"].value == len(cleaned)
    assert meta["cleaned_set"]["rows_removed"].value == 10_000 - len(cleaned)
    assert "data:image/png;base64," in meta["cleaned_set"]["before_after"].value
    assignments = result.output_for_node("machine_clusters")
    assert len(assignments) == len(cleaned) and set(assignments["cluster"]) == {0, 1, 2}
    assert "data:image/png;base64," in meta["machine_clusters"]["map"].value


def test_failing_check_blocks_downstream_assets(tmp_path: Path, ai4i: pd.DataFrame) -> None:
    resource = load_database(f"sqlite:///{tmp_path / 'readings.db'}", ai4i.head(1000), NO_PERIPHERAL)
    result = dg.materialize(
        [training_set, training_set_expectations, cleaned_set],
        resources={"readings_store": resource},
        run_config={"ops": {"training_set_expectations": {"config": {"min_failures": 100}}}},
        raise_on_error=False,
    )
    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert not check.passed and check.check_name == "expectations"
    assert "expect_column_sum_to_be_between" in check.metadata["failed_expectations"].value
    materialized = {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}
    assert materialized == {"training_set"}
