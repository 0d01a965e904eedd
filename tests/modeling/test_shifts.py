"""Shifted holdouts, the robust objective, jittered training copies and calibration, without services."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split

from mfd.modeling.calibration import CalibratedModel, Calibrator, brier
from mfd.modeling.candidate import train_candidate
from mfd.modeling.robust import Robustness
from mfd.modeling.shifts import (
    CrossSource,
    LabelNoise,
    NoiseLevels,
    ShiftConfig,
    label_noise,
    near_threshold,
    shifted_holdouts,
)
from mfd.modeling.tuning import prepare_folds, refit, tune, tune_families
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN, SENSOR_COLUMNS


@pytest.fixture(scope="module")
def ai4i() -> pd.DataFrame:
    return load_ai4i()


@pytest.fixture(scope="module")
def small(ai4i: pd.DataFrame) -> pd.DataFrame:
    part, _ = train_test_split(ai4i, train_size=2000, stratify=ai4i[LABEL_COLUMN], random_state=1)
    return part.reset_index(drop=True)


def test_measurement_noise_changes_only_the_sensors_by_the_configured_levels(ai4i: pd.DataFrame) -> None:
    levels = NoiseLevels.of(seed=5, air_temperature_k=0.5, process_temperature_k=0.0)
    noisy = levels.apply(ai4i)
    others = [c for c in ai4i.columns if c not in SENSOR_COLUMNS]
    pd.testing.assert_frame_equal(noisy[others], ai4i[others])
    # a level of zero leaves its sensor as it is
    pd.testing.assert_series_equal(noisy["process_temperature_k"], ai4i["process_temperature_k"])
    diff = noisy[list(SENSOR_COLUMNS)] - ai4i[list(SENSOR_COLUMNS)]
    assert diff["air_temperature_k"].std() == pytest.approx(0.5, rel=0.05)
    assert diff["tool_wear_min"].std() == pytest.approx(5.0, rel=0.1)  # clipped at 0 min for new tools
    for col, level in (("rotational_speed_rpm", 0.02), ("torque_nm", 0.03)):
        assert (diff[col] / ai4i[col]).std() == pytest.approx(level, rel=0.05)
    # seeded: the same noise again, other noise with another seed
    pd.testing.assert_frame_equal(levels.apply(ai4i), noisy)
    assert not levels.apply(ai4i, seed=6)["air_temperature_k"].equals(noisy["air_temperature_k"])


def test_label_noise_flips_only_labels_of_rows_near_a_threshold(ai4i: pd.DataFrame) -> None:
    noise = LabelNoise(band=0.05, flip=0.5, seed=3)
    near = near_threshold(ai4i, noise.band)
    assert 0 < near.sum() < len(ai4i) / 2
    shifted = label_noise(ai4i, noise)
    pd.testing.assert_frame_equal(shifted.drop(columns=[LABEL_COLUMN]), ai4i.drop(columns=[LABEL_COLUMN]))
    flipped = shifted[LABEL_COLUMN].to_numpy() != ai4i[LABEL_COLUMN].astype("int64").to_numpy()
    assert flipped.any()
    assert not flipped[~near].any()
    assert flipped[near].mean() == pytest.approx(0.5, abs=0.1)


def test_near_threshold_finds_the_rule_boundaries() -> None:
    rows = pd.DataFrame(
        {
            "machine_type": ["L", "L", "L", "M"],
            "air_temperature_k": [300.0, 300.0, 300.0, 300.0],
            "process_temperature_k": [308.7, 312.0, 312.0, 312.0],  # diff 8.7 K: near the 8.6 K HDF limit
            "rotational_speed_rpm": [1300.0, 1500.0, 1500.0, 1500.0],
            "torque_nm": [40.0, 40.0, 40.0, 60.0],
            "tool_wear_min": [10.0, 10.0, 10.0, 200.0],  # 60 x 200 = 12,000: the M overstrain limit
        }
    )
    assert near_threshold(rows, 0.05).tolist() == [True, False, False, True]


def test_shifted_holdouts_are_named_and_leave_the_clean_one_alone(small: pd.DataFrame) -> None:
    before = small.copy()
    holdouts = shifted_holdouts(small, ShiftConfig())
    assert list(holdouts) == ["clean", "noisy", "label_noise"]
    pd.testing.assert_frame_equal(holdouts["clean"], before)
    assert ShiftConfig().record()["noise_torque_nm"] == 0.03
    assert "cross_seed" not in ShiftConfig(cross=None).record()


def test_jittered_copies_keep_labels_and_types(small: pd.DataFrame) -> None:
    robust = Robustness(jitter_copies=2)
    rows = small.head(100)
    out = robust.jittered(rows, seed=0)
    assert len(out) == 300
    for k in range(3):
        part = out.iloc[100 * k : 100 * (k + 1)].reset_index(drop=True)
        assert (part[LABEL_COLUMN].to_numpy() == rows[LABEL_COLUMN].to_numpy()).all()
        assert (part["machine_type"].to_numpy() == rows["machine_type"].to_numpy()).all()
        assert part["torque_nm"].equals(rows["torque_nm"].reset_index(drop=True)) == (k == 0)
    assert Robustness().jittered(rows, seed=0) is rows


def test_robust_objective_picks_the_family_the_table_says(small: pd.DataFrame) -> None:
    families = ("hgb", "logreg")
    chosen = {}
    for objective in ("robust", "clean"):
        robustness = Robustness(objective=objective)
        results = tune_families(
            "auto", small, folds=3, trials=1, seed=0, robustness=robustness, candidates=families
        )
        table = pd.DataFrame({r.family: r.cv for r in results}).T
        expected = (table["pr_auc"] + table["noisy_pr_auc"]) / 2 if objective == "robust" else table["pr_auc"]
        np.testing.assert_allclose(table["objective"], expected.loc[table.index])
        assert results[0].family == expected.idxmax()
        chosen[objective] = results[0]
    # the noisy validation folds score lower than the clean ones: what the robust objective weighs in
    assert chosen["robust"].cv["noisy_pr_auc"] < chosen["robust"].cv["pr_auc"]


class _Squashed(ClassifierMixin, BaseEstimator):
    """A 'fitted' model whose probability is the true one cubed: right ranking, wrong probabilities."""

    classes_ = np.array([0, 1])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        p = x[:, 0] ** 3
        return np.column_stack([1 - p, p])


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_calibration_lowers_the_brier_score_of_a_miscalibrated_model(method: str) -> None:
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 1, (4000, 1))
    y = (rng.uniform(0, 1, 4000) < truth[:, 0]).astype("int64")
    model = _Squashed()
    fit, test = slice(0, 2000), slice(2000, None)
    calibrator = Calibrator(method).fit(model.predict_proba(truth[fit])[:, 1], y[fit])
    calibrated = CalibratedModel(model, calibrator)
    raw_p = model.predict_proba(truth[test])[:, 1]
    cal_p = calibrated.predict_proba(truth[test])[:, 1]
    assert brier(y[test], cal_p) < brier(y[test], raw_p) - 0.01
    np.testing.assert_allclose(calibrated.predict_proba(truth[test]).sum(axis=1), 1.0)


def test_candidate_keeps_shifts_validation_predictions_and_calibration(small: pd.DataFrame) -> None:
    shifts = ShiftConfig(cross=CrossSource(machines=5, rows=2000, seed=1))
    candidate = train_candidate(
        small,
        family="hgb",
        folds=3,
        trials=1,
        seed=0,
        calibration="isotonic",
        shifts=shifts,
        robustness=Robustness(jitter_copies=1),
    )
    assert set(candidate.shifted["shift"]) == {"clean", "noisy", "label_noise", "ai4i->fleet", "fleet->ai4i"}
    clean = candidate.shift_table("clean").loc["hgb"]
    assert clean["pr_auc"] == pytest.approx(candidate.holdout_scores["pr_auc"])
    assert candidate.shift_table("noisy").loc["hgb", "pr_auc"] < clean["pr_auc"]
    validation = candidate.validation
    assert list(validation.columns) == ["y", "proba", "machine_type"]
    assert len(validation) == len(small) - len(candidate.holdout)
    assert set(validation["machine_type"]) == {"L", "M", "H"}
    assert validation["proba"].between(0, 1).all()
    assert candidate.calibration["method"] == "isotonic"
    assert candidate.calibration["holdout_brier"] > 0
    # the promotion gate scores the holdout and its noisy copy under the robust objective
    assert len(candidate.gate_holdout) == 2 * len(candidate.holdout)


def test_a_winner_stopped_by_the_budget_is_calibrated_on_the_folds_it_ran(small: pd.DataFrame) -> None:
    robustness = Robustness()
    prepared = prepare_folds(small, 3, 0, robustness)
    tuned = tune("logreg", prepared=prepared, trials=1)
    first = prepared.splits[0].valid
    stopped = replace(tuned, oof=np.where(np.isin(np.arange(len(small)), first), tuned.oof, np.nan))
    final = refit(stopped, small, prepared, seed=0, robustness=robustness, calibration="sigmoid")
    assert np.isnan(final.oof).sum() == len(small) - len(first)
    assert np.isfinite(final.oof[first]).all() and 0 < final.threshold < 1
