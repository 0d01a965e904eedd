"""Sequence models: per-machine windows (order, labels, a leak-free time split), every architecture on a
fault only a window can see, and the `sequence_models` asset against the real MLflow server."""

from __future__ import annotations

import time

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import unique
from mlflow.pytorch import load_model
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from mfd.errors import MfdError
from mfd.features import FEATURE_COLUMNS, add_physics, feature_array
from mfd.modeling.budget import Deadline
from mfd.modeling.sequence.architectures import AUTOENCODER, CLASSIFIERS
from mfd.modeling.sequence.models import SequenceSettings, check_architectures, train_sequence_model
from mfd.modeling.sequence.windows import WindowSplit, split_windows
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN
from mfd.services import MlflowServer
from mfd_assets.training import SequenceModelsConfig, sequence_models
from mfd_resources import Tracking

WINDOW = 8
FAST = SequenceSettings(hidden=16, epochs=30, patience=5, learning_rate=1e-2)


def _walk(rng: np.random.Generator, rows: int, sd: float, phi: float = 0.9) -> np.ndarray:
    """A stationary AR(1) walk around 0 with standard deviation `sd`: a smooth sensor."""
    out = np.empty(rows)
    out[0] = rng.normal(0.0, sd)
    for t in range(1, rows):
        out[t] = phi * out[t - 1] + rng.normal(0.0, sd * np.sqrt(1 - phi**2))
    return out


def _fleet(machines: int = 8, rows: int = 500, seed: int = 0) -> pd.DataFrame:
    """Readings of `machines` machines where a fault shows only across readings: every sensor walks
    smoothly while a machine is healthy, but while it is faulty (labelled a failure) torque is white noise
    of the same mean and sd as its walk, so each single reading has the same distribution in both states."""
    rng = np.random.default_rng(seed)
    frames = []
    for m in range(machines):
        faulty = np.zeros(rows, dtype=bool)
        for start in rng.choice(rows - 12, size=rows // 60, replace=False):
            faulty[start : start + 12] = True
        air = 300.0 + _walk(rng, rows, 1.0)
        frame = pd.DataFrame(
            {
                "machine_id": f"T-{m:02d}",
                "timestamp": pd.Timestamp("2026-01-01", tz="UTC")
                + pd.to_timedelta(np.arange(rows), unit="min"),
                "machine_type": "LM"[m % 2],
                "air_temperature_k": air,
                "process_temperature_k": air + 10.0 + _walk(rng, rows, 0.5),
                "rotational_speed_rpm": 1500.0 + _walk(rng, rows, 50.0),
                "torque_nm": 40.0 + np.where(faulty, rng.normal(0.0, 10.0, rows), _walk(rng, rows, 10.0)),
                "tool_wear_min": (np.arange(rows) * 2 % 220).astype("float64"),
                LABEL_COLUMN: faulty.astype("int8"),
            }
        )
        for mode in FAILURE_MODE_COLUMNS:  # the modes mirror the label: a model that read them would leak
            frame[mode] = frame[LABEL_COLUMN]
        frames.append(frame)
    # Rows of all machines interleaved and shuffled: the windows must restore each machine's time order.
    df = pd.concat(frames).sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df[LABEL_COLUMN] = df[LABEL_COLUMN].astype("Int8")
    return add_physics(df)


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    return _fleet()


@pytest.fixture(scope="module")
def split(fleet: pd.DataFrame) -> WindowSplit:
    _, windows = split_windows(fleet, window=WINDOW, stride=1)
    assert windows.problem() is None
    return windows


def test_windows_follow_one_machine_in_time_order_with_the_last_readings_label(fleet: pd.DataFrame) -> None:
    series, windows = split_windows(fleet, window=WINDOW, stride=2)
    features = feature_array(series)
    assert windows.machines == 8 and windows.rows_used == len(fleet) and windows.rows_left_out == 0
    for part in windows.parts().values():
        assert part.x.shape[1:] == (WINDOW, len(FEATURE_COLUMNS))
        for i in range(len(part)):
            rows = series.iloc[part.first[i] : part.last[i] + 1]
            assert (rows["machine_id"] == part.machine[i]).all()
            assert rows["timestamp"].is_monotonic_increasing and rows["timestamp"].is_unique
            # the inputs are the feature columns of exactly those readings: never the failure modes
            np.testing.assert_allclose(part.x[i], features[part.first[i] : part.last[i] + 1], rtol=1e-6)
        assert (part.y == series[LABEL_COLUMN].to_numpy()[part.last]).all()
    assert np.all(np.diff(windows.train.first[windows.train.machine == "T-00"]) == 2)
    assert np.all(np.diff(windows.test.first[windows.test.machine == "T-00"]) == 1)


def test_horizon_labels_a_window_by_the_next_readings_too(fleet: pd.DataFrame) -> None:
    series, windows = split_windows(fleet, window=WINDOW, horizon=3)
    labels = series[LABEL_COLUMN].to_numpy()
    for part in windows.parts().values():
        expected = [labels[last : last + 4].max() for last in part.last]
        assert part.y.tolist() == expected
        assert (series["machine_id"].to_numpy()[part.last + 3] == part.machine).all()


def test_no_held_out_window_shares_a_reading_with_a_training_window(fleet: pd.DataFrame) -> None:
    _, windows = split_windows(fleet, window=WINDOW, stride=1, horizon=2)

    def readings(part: str) -> set[int]:
        w = windows.parts()[part]
        # with the horizon, a window's label also reads the next readings
        return {r for a, b in zip(w.first, w.last + windows.horizon, strict=True) for r in range(a, b + 1)}

    train, validation, test = readings("train"), readings("validation"), readings("test")
    assert not train & test and not train & validation and not validation & test
    for machine in np.unique(windows.test.machine):
        assert (
            windows.train.last[windows.train.machine == machine].max()
            < windows.test.first[windows.test.machine == machine].min()
        )


def test_rows_without_a_machine_series_are_left_out_and_named() -> None:
    ai4i = add_physics(load_ai4i().head(2000))
    _, alone = split_windows(ai4i, window=WINDOW)
    assert alone.machines == 0 and len(alone.train) == 0
    assert "no per-machine series" in alone.problem() and "2000 labelled rows left out" in alone.problem()
    with pytest.raises(MfdError, match="no per-machine series"):
        train_sequence_model("lstm", alone, FAST)
    _, mixed = split_windows(pd.concat([ai4i, _fleet()], ignore_index=True), window=WINDOW)
    assert (mixed.machines, mixed.rows_left_out) == (8, 2000)
    assert set(mixed.train.machine) == {f"T-{m:02d}" for m in range(8)}


def test_a_single_reading_cannot_see_the_fault(split: WindowSplit) -> None:
    last = LogisticRegression(max_iter=1000).fit(split.train.x[:, -1], split.train.y)
    assert roc_auc_score(split.test.y, last.predict_proba(split.test.x[:, -1])[:, 1]) < 0.6


@pytest.mark.parametrize("architecture", CLASSIFIERS)
def test_each_classifier_sees_the_fault_in_a_window(split: WindowSplit, architecture: str) -> None:
    result = train_sequence_model(architecture, split, FAST)
    assert result.scores["roc_auc"] > 0.65, result.scores
    assert 0.0 < result.threshold < 1.0 and 1 <= result.epochs_run <= FAST.epochs
    assert result.latency["latency_window_ms"] > 0 and result.latency["latency_1k_ms"] > 0
    again = train_sequence_model(architecture, split, FAST)
    np.testing.assert_allclose(again.test_score, result.test_score)  # seeded: same weights, same scores


def test_a_spent_time_budget_stops_training_after_the_epoch_that_spent_it(split: WindowSplit) -> None:
    budgeted = SequenceSettings(**{**FAST.__dict__, "epochs": 5, "patience": 5, "time_budget_s": 0.0})
    assert train_sequence_model("gru", split, budgeted).epochs_run == 1
    unbudgeted = SequenceSettings(**{**budgeted.__dict__, "time_budget_s": None})
    assert train_sequence_model("gru", split, unbudgeted).epochs_run > 1


def test_a_passed_deadline_keeps_the_first_epoch_and_starts_no_other(split: WindowSplit) -> None:
    settings = SequenceSettings(**{**FAST.__dict__, "epochs": 5, "patience": 5})
    result = train_sequence_model("gru", split, settings, deadline=Deadline(time.perf_counter()))
    assert result.epochs_run == 1 and np.isfinite(result.test_score).all()
    assert train_sequence_model("gru", split, settings, deadline=Deadline.after(3600.0)).epochs_run > 1


def test_a_bounded_split_samples_training_windows_only(split: WindowSplit) -> None:
    bounded = split.bounded(200, seed=1)
    assert len(bounded.train) == 200
    # every failure window up to half of the sample, the rest normal windows, all from the training part
    assert bounded.train.failures == min(split.train.failures, 100)
    rows = {(m, f) for m, f in zip(split.train.machine, split.train.first, strict=True)}
    assert {(m, f) for m, f in zip(bounded.train.machine, bounded.train.first, strict=True)} <= rows
    assert bounded.validation is split.validation and bounded.test is split.test
    assert split.bounded(len(split.train), seed=1) is split and split.bounded(None, seed=1) is split
    np.testing.assert_array_equal(split.bounded(200, seed=1).train.first, bounded.train.first)  # seeded


def test_the_autoencoder_scores_faulty_windows_above_normal_ones(split: WindowSplit) -> None:
    result = train_sequence_model(AUTOENCODER, split, FAST)
    errors, faulty = result.test_score, split.test.y == 1
    assert np.median(errors[faulty]) > 1.5 * np.median(errors[~faulty])
    assert result.scores["roc_auc"] > 0.65, result.scores


def test_unknown_architectures_are_named() -> None:
    with pytest.raises(MfdError, match="transformer.*choose from lstm_autoencoder"):
        check_architectures(["lstm", "transformer"])
    with pytest.raises(MfdError, match="no architecture"):
        check_architectures([])


def _materialize(tracking: Tracking, frame: pd.DataFrame, config: SequenceModelsConfig) -> dict:
    @dg.asset(name="training_set")
    def training_set() -> pd.DataFrame:
        return frame

    result = dg.materialize(
        [training_set, sequence_models],
        resources={"tracking": tracking},
        run_config=dg.RunConfig({"sequence_models": config}),
    )
    [event] = result.asset_materializations_for_node("sequence_models")
    return {k: v.value for k, v in event.metadata.items()}


@pytest.mark.integration
def test_asset_logs_one_nested_run_per_architecture(mlflow: MlflowServer) -> None:
    tracking = Tracking(tracking_uri=mlflow.tracking_uri, experiment_name=unique("seq-"))
    config = SequenceModelsConfig(architectures=[AUTOENCODER, "gru"], window=WINDOW, hidden=16, epochs=4)
    frame = _fleet()
    metadata = _materialize(tracking, frame, config)
    assert metadata["trained"] is True and metadata["machines"] == 8
    table = str(metadata["comparison"])  # Dagster table metadata: its records as text
    assert "roc_auc" in table and "latency_window_ms" in table
    assert "'lstm_autoencoder'" in table and "'gru'" in table
    assert metadata["time_budget_s"] == config.time_budget_s and metadata["fit_s_total"] > 0
    # the whole step's budget vs what it spent, per phase
    assert metadata["budget_s"] == config.time_budget_s
    assert 0 < metadata["training_s"] + metadata["mlflow_logging_s"] <= metadata["spent_s"]
    assert "'mlflow_logging'" in str(metadata["budget"])
    assert "data:image/png;base64," in metadata["pr_curves"]
    parent_id = metadata["mlflow_run"].rsplit("/", 1)[-1]
    client = tracking.client()
    children = client.search_runs(
        [client.get_run(parent_id).info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    assert sorted(r.data.tags["architecture"] for r in children) == ["gru", AUTOENCODER]
    _, split = split_windows(frame, window=WINDOW)
    for run in children:
        assert run.info.run_id in table  # each row links its run
        assert {"test_roc_auc", "test_pr_auc", "fit_seconds", "latency_1k_ms"} <= set(run.data.metrics)
        assert run.data.params["window"] == str(WINDOW)
        assert [a.path for a in client.list_artifacts(run.info.run_id, "plots")] == [
            f"plots/{run.data.tags['architecture']}.png"
        ]
        [model] = client.search_logged_models(
            [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
        )
        # the logged network takes raw feature windows (its scaling is inside) and scores each one
        network = load_model(model.model_uri)
        scored = network(torch.from_numpy(split.test.x[:50])).detach().numpy()
        assert scored.shape == (50,) and np.isfinite(scored).all() and (scored >= 0).all()


@pytest.mark.integration
def test_asset_says_why_when_the_training_set_has_no_machine_series(mlflow: MlflowServer) -> None:
    tracking = Tracking(tracking_uri=mlflow.tracking_uri, experiment_name=unique("seq-"))
    metadata = _materialize(tracking, add_physics(load_ai4i().head(1000)), SequenceModelsConfig())
    assert metadata["trained"] is False and metadata["machines"] == 0
    assert "no per-machine series" in metadata["reason"]


def test_machines_run_to_failure_split_by_machine_with_both_classes_in_every_part() -> None:
    """Lives that end in failure (failures only at the end): split in time, the early segments hold one
    class only (the old 'train windows hold one class only'); split by machine, every part has both, no
    machine is in two parts, and the test windows carry their machine and time for lead time."""
    df = _fleet(machines=10, rows=120, seed=4)
    ordered = df.sort_values(["machine_id", "timestamp"])
    position = ordered.groupby("machine_id").cumcount(ascending=False)
    df.loc[ordered.index, LABEL_COLUMN] = (position < 15).astype("int8").to_numpy()  # the last 15 readings
    _, in_time = split_windows(df, window=WINDOW, by_machine=False)
    assert "hold one class only" in (in_time.problem() or "")
    _, whole = split_windows(df, window=WINDOW, by_machine=True)
    assert whole.problem() is None
    parts = {name: set(w.machine) for name, w in whole.parts().items()}
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["validation"])
    assert (len(parts["test"]), len(parts["validation"]), len(parts["train"])) == (2, 2, 6)
    assert len(whole.test_rows) == len(whole.test)
    assert (whole.test_rows["machine_id"].to_numpy() == whole.test.machine).all()
    assert (whole.test_rows[LABEL_COLUMN].to_numpy() == whole.test.y).all()
