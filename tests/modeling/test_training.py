"""Training without services: families, tuning, thresholds, the holdout, nested CV, the torch MLP."""

from __future__ import annotations

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from mfd.errors import MfdError
from mfd.features import FEATURE_COLUMNS, feature_array
from mfd.modeling.candidate import train_candidate
from mfd.modeling.families import FAMILIES
from mfd.modeling.holdout import holdout_split
from mfd.modeling.metrics import METRICS, best_threshold, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.modeling.shifts import ShiftConfig
from mfd.modeling.torch_mlp import TorchMLPClassifier
from mfd.modeling.training_data import trainability_problem
from mfd.modeling.tuning import SCREEN_MARGIN, nested_cv, tune
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN


@pytest.fixture(scope="module")
def small() -> pd.DataFrame:
    """2,000 AI4I readings, stratified: about 68 failures."""
    df = load_ai4i()
    part, _ = train_test_split(df, train_size=2000, stratify=df[LABEL_COLUMN], random_state=1)
    return part.reset_index(drop=True)


def test_trainability_problem_names_the_reason(small: pd.DataFrame) -> None:
    assert trainability_problem(small) is None
    healthy = small[small[LABEL_COLUMN] == 0]
    assert "one class" in trainability_problem(healthy)
    few = pd.concat([healthy, small[small[LABEL_COLUMN] == 1].head(5)])
    assert "5 failures" in trainability_problem(few, folds=5)
    with pytest.raises(MfdError, match="one class"):
        train_candidate(healthy, family="logreg", folds=2, trials=1)


def test_unknown_family_lists_the_choices(small: pd.DataFrame) -> None:
    with pytest.raises(MfdError, match="hgb"):
        train_candidate(small, family="xgboost")


def test_best_threshold_maximizes_f1() -> None:
    y = np.array([0, 0, 0, 1, 1, 0, 1])
    proba = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.65, 0.9])
    threshold = best_threshold(y, proba)
    assert threshold == pytest.approx(0.6)
    assert scores(y, proba, threshold)["f1"] == pytest.approx(2 * 0.75 * 1.0 / 1.75)


def test_tune_reports_cv_scores_at_a_validation_threshold(small: pd.DataFrame) -> None:
    tuned = tune("hgb", small, folds=3, trials=2, seed=0)
    assert tuned.trials == 2
    assert tuned.cv["roc_auc"] > 0.9 and tuned.cv["pr_auc"] > 0.5
    assert 0.0 < tuned.threshold < 1.0
    assert tuned.oof.shape == (len(small),)
    # the first trial is the family's reference configuration
    assert set(tuned.params) == set(FAMILIES["hgb"].reference)


def test_candidate_is_scored_on_a_holdout_it_never_saw(small: pd.DataFrame) -> None:
    candidate = train_candidate(
        small, family="logreg", folds=3, trials=2, holdout_fraction=0.25, calibration="none"
    )
    assert len(candidate.holdout) == 500
    assert candidate.holdout[LABEL_COLUMN].sum() == pytest.approx(0.25 * small[LABEL_COLUMN].sum(), abs=1)
    # the pipeline was fit on the other 1,500 rows: their count is what the model's scaler saw
    scaler = candidate.pipeline.named_steps["model"].steps[0][1]
    assert scaler.n_samples_seen_ == 1500
    proba = candidate.pipeline.predict_proba(small[list(MODEL_INPUT_COLUMNS)])[:, 1]
    assert ((proba >= 0) & (proba <= 1)).all()
    assert set(candidate.holdout_scores) == set(METRICS)
    assert candidate.latency["latency_row_ms"] > 0 and candidate.latency["latency_10k_ms"] > 0
    assert list(candidate.families.index) == ["logreg"]


def test_candidate_is_scored_on_the_given_holdout_and_refuses_an_overlapping_one(
    small: pd.DataFrame,
) -> None:
    split = holdout_split(small.assign(id=range(1, len(small) + 1)), fraction=0.3, seed=4)
    candidate = train_candidate(
        split.train, holdout=split.holdout, family="logreg", folds=2, trials=1, calibration="none"
    )
    pd.testing.assert_frame_equal(
        candidate.holdout, split.holdout[candidate.holdout.columns], check_dtype=False
    )
    assert candidate.pipeline.named_steps["model"].steps[0][1].n_samples_seen_ == len(split.train)
    with pytest.raises(MfdError, match="holdout row"):
        train_candidate(split.train, holdout=split.train.head(40), family="logreg", folds=2, trials=1)


def test_auto_screens_every_family_and_keeps_the_best(small: pd.DataFrame) -> None:
    candidate = train_candidate(
        small, family="auto", folds=2, trials=2, seed=0, shifts=ShiftConfig(cross=None)
    )
    table = candidate.families
    assert set(table.index) == set(FAMILIES)
    tuned = table[table["status"] == "tuned"]
    assert tuned["objective"].is_monotonic_decreasing
    assert candidate.family == table.index[0]
    # only contenders within the screen margin got more than their reference trial
    best = tuned["objective"].max()
    assert (table.loc[table["objective"] < best - SCREEN_MARGIN, "trials"] == 1).all()
    assert table["trials"].max() == 2


def test_auto_under_a_time_budget_still_returns_a_candidate(small: pd.DataFrame) -> None:
    candidate = train_candidate(small, family="auto", folds=3, trials=3, seed=0, time_budget_s=1.0)
    table = candidate.families
    assert set(table.index) == set(FAMILIES)
    assert candidate.family in table.index
    # with one second for all of it, not every family can finish all of its trials
    assert (table["status"] != "tuned").any() or (table["trials"] < 3).all()
    assert candidate.budget["time_budget_s"] == 1.0


def test_nested_cv_tunes_inside_each_outer_fold(small: pd.DataFrame) -> None:
    folds = nested_cv(small, family="hgb", outer_folds=2, inner_folds=2, trials=1)
    assert list(folds.index) == [0, 1]
    assert (folds["family"] == "hgb").all()
    assert folds["roc_auc"].between(0.8, 1.0).all()
    # each outer fold is also scored with measurement noise, which costs it PR AUC
    assert (folds["noisy_pr_auc"] < folds["pr_auc"]).all()


def test_torch_mlp_fits_in_the_pipeline_and_pickles(small: pd.DataFrame) -> None:
    y = small[LABEL_COLUMN].astype("int64").to_numpy()
    pipeline = build_pipeline(TorchMLPClassifier(epochs=5, random_state=3)).fit(small, y)
    proba = pipeline.predict_proba(small.head(50))
    assert proba.shape == (50, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    restored = cloudpickle.loads(cloudpickle.dumps(pipeline))
    np.testing.assert_allclose(restored.predict_proba(small.head(50)), proba)
    again = build_pipeline(TorchMLPClassifier(epochs=5, random_state=3)).fit(small, y)
    np.testing.assert_allclose(again.predict_proba(small.head(50)), proba, rtol=1e-5)


def test_feature_array_is_the_model_input_matrix(small: pd.DataFrame) -> None:
    readings = small[list(MODEL_INPUT_COLUMNS)].head(50).copy()
    readings.loc[3, "machine_type"] = pd.NA
    x = pd.DataFrame(feature_array(readings), columns=list(FEATURE_COLUMNS))
    np.testing.assert_array_equal(x["torque_nm"], readings["torque_nm"])
    np.testing.assert_allclose(
        x["power_w"], readings["torque_nm"] * readings["rotational_speed_rpm"] * 2 * np.pi / 60, rtol=1e-12
    )
    np.testing.assert_array_equal(
        x["temperature_difference_k"], readings["process_temperature_k"] - readings["air_temperature_k"]
    )
    types = x[["type_L", "type_M", "type_H"]]
    assert types.iloc[3].isna().all()
    known = readings["machine_type"].notna().to_numpy()
    assert (types[known].sum(axis=1) == 1).all()
    assert (types[known].idxmax(axis=1).str[-1] == readings["machine_type"][known].to_numpy()).all()
    # a frame built the way the service builds one (object columns from JSON values) gives the same matrix
    served = pd.DataFrame({c: readings[c].head(3).tolist() for c in MODEL_INPUT_COLUMNS})
    np.testing.assert_array_equal(feature_array(served), x.head(3).to_numpy())
