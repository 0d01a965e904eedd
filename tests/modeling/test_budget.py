"""Wall-clock budgets: deadlines inside fits (chunked forests and boosting, torch epochs), the race that
always keeps a candidate, a step's budget vs spent record, and a candidate's MLflow run spanning its
training."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from conftest import unique
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import train_test_split

from mfd.features import feature_array
from mfd.modeling.blend import JitterBlend
from mfd.modeling.budget import NO_DEADLINE, Deadline, OutOfTime, Spent, fit_within
from mfd.modeling.candidate import train_candidate
from mfd.modeling.experiment import log_candidate
from mfd.modeling.shifts import ShiftConfig
from mfd.modeling.torch_mlp import TorchMLPClassifier
from mfd.modeling.tuning import Race
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN
from mfd.services import MlflowServer
from mfd.storage import tracking


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    df = load_ai4i()
    part, _ = train_test_split(df, train_size=2000, stratify=df[LABEL_COLUMN], random_state=1)
    return part.reset_index(drop=True)


@pytest.fixture(scope="module")
def xy(small: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    return feature_array(small), small[LABEL_COLUMN].astype("int64").to_numpy()


def test_a_deadline_check_counts_the_time_a_step_is_expected_to_take() -> None:
    later = Deadline.after(100.0)
    later.check(expected_s=50.0)
    with pytest.raises(OutOfTime):
        later.check(expected_s=150.0)
    with pytest.raises(OutOfTime):
        Deadline.after(0.0).check()
    assert not NO_DEADLINE.bounded and NO_DEADLINE.remaining() == np.inf
    assert later.earlier(30.0).at == pytest.approx(later.at - 30.0)


@pytest.mark.parametrize(
    "model",
    [
        RandomForestClassifier(n_estimators=60, min_samples_leaf=2, random_state=3),
        HistGradientBoostingClassifier(max_iter=60, early_stopping=False, random_state=3),
    ],
    ids=["forest", "boosting"],
)
def test_a_fit_grown_in_chunks_is_the_model_of_one_fit(model, xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    whole = clone(model).fit(x, y)
    chunked = fit_within(clone(model), x, y, Deadline.after(3600.0))
    np.testing.assert_allclose(chunked.predict_proba(x), whole.predict_proba(x), rtol=1e-9, atol=1e-12)
    # its params are the configured ones again, not the last chunk's
    assert chunked.get_params() == model.get_params()


def test_a_deadline_cuts_a_forest_between_chunks(xy: tuple[np.ndarray, np.ndarray]) -> None:
    x, y = xy
    forest = RandomForestClassifier(n_estimators=5000, random_state=0)
    with pytest.raises(OutOfTime):
        fit_within(forest, x, y, Deadline.after(0.2))
    assert 0 < len(forest.estimators_) < 5000


def test_a_deadline_cuts_torch_epochs_and_a_blend_between_its_halves(
    xy: tuple[np.ndarray, np.ndarray],
) -> None:
    x, y = xy
    started = time.perf_counter()
    TorchMLPClassifier(epochs=1, random_state=0).fit(x, y)
    epoch_s = time.perf_counter() - started
    # a deadline within the first of many epochs: the fit stops at that epoch's end
    mlp = TorchMLPClassifier(epochs=10_000, random_state=0)
    with pytest.raises(OutOfTime):
        fit_within(mlp, x, y, Deadline.after(epoch_s / 2))
    blend = JitterBlend(random_state=0)
    with pytest.raises(OutOfTime):
        blend.fit_within(x, y, Deadline(time.perf_counter()))
    assert hasattr(blend, "sharp_") and not hasattr(blend, "robust_")


def test_the_race_cuts_no_fit_before_a_family_has_run_two_folds() -> None:
    race = Race(end=Deadline(time.perf_counter() - 1.0), reserve_fits=2.0)
    assert race.fit_deadline() is NO_DEADLINE  # past its end, but no candidate yet
    race.fitted("hgb", 1.5)
    assert not race.trails("hgb", 0, 0.8)
    assert race.fit_deadline() is NO_DEADLINE  # one fold only
    assert not race.trails("hgb", 1, 0.8)
    assert race.fit_deadline().at == pytest.approx(race.end.at - 2.0 * 1.5)
    # a family that trails no longer holds time back for its refit
    race.fitted("mlp", 10.0)
    race.trails("mlp", 0, 0.5)
    assert race.trails("mlp", 1, 0.5)
    assert race.fit_deadline().at == pytest.approx(race.end.at - 2.0 * 1.5)


def test_spent_records_each_phase_against_the_budget() -> None:
    spent = Spent(10.0)
    with spent.phase("a"):
        time.sleep(0.01)
    with spent.phase("a"):
        pass
    with spent.phase("b"):
        pass
    record = spent.record()
    assert record["budget_s"] == 10.0 and list(record)[3:] == ["a_s", "b_s"]
    assert 0.01 <= record["a_s"] <= record["spent_s"]
    table = spent.table()
    assert list(table.index) == ["a", "b", "step"] and table.loc["step", "budget_s"] == 10.0
    assert spent.deadline.at == pytest.approx(spent.started + 10.0)
    assert Spent(None).deadline is NO_DEADLINE


def test_a_budgeted_candidate_reports_its_phases(small: pd.DataFrame) -> None:
    candidate = train_candidate(
        small, family="auto", folds=3, trials=2, seed=0, time_budget_s=20.0, shifts=ShiftConfig(cross=None)
    )
    record = candidate.spent.record()
    assert record["budget_s"] == 20.0
    assert {"folds_s", "tuning_s", "refit_and_shifted_holdouts_s", "latency_s"} <= set(record)
    assert sum(v for k, v in record.items() if k not in ("budget_s", "spent_s", "cpu_s")) <= record["spent_s"]
    assert candidate.seconds == pytest.approx(record["spent_s"], abs=0.5)


@pytest.mark.integration
def test_the_candidate_run_in_mlflow_spans_the_training(mlflow: MlflowServer, small: pd.DataFrame) -> None:
    client = tracking.connect(mlflow.tracking_uri)
    experiment = tracking.experiment_id(client, unique("exp-"))
    candidate = train_candidate(small, family="hgb", folds=2, trials=1, seed=0)
    logged = log_candidate(candidate, experiment_id=experiment, settings={}, tags={})
    info = client.get_run(logged.run_id).info
    assert info.status == "FINISHED"
    assert info.end_time - info.start_time >= 1000 * candidate.seconds
    assert info.start_time == int(candidate.spent.started_at * 1000)
