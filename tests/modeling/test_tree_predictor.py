"""The flat tree walk is an exact twin of scikit-learn's predict_proba, and the pipeline's tree families use it."""

from __future__ import annotations

import cloudpickle
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from mfd.features import feature_array
from mfd.modeling.families import FAMILIES
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.modeling.tree_predictor import (
    MAX_FLAT_ROWS,
    MIN_THREADED_ROWS,
    FlatEnsemble,
    FlatTreeClassifier,
    flattenable,
)
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN

TREE_FAMILIES = ("rf", "hgb", "vote")


@pytest.fixture(scope="module")
def split() -> tuple[pd.DataFrame, pd.DataFrame]:
    """3,000 AI4I readings to fit on, 1,000 others to score."""
    df = load_ai4i()
    train, rest = train_test_split(df, train_size=3000, stratify=df[LABEL_COLUMN], random_state=2)
    return train.reset_index(drop=True), rest.head(1000).reset_index(drop=True)


@pytest.fixture(scope="module", params=TREE_FAMILIES)
def fitted(request: pytest.FixtureRequest, split: tuple[pd.DataFrame, pd.DataFrame]) -> object:
    """The family's reference estimator fit on the training readings' features."""
    train, _ = split
    estimator = FAMILIES[request.param].make(FAMILIES[request.param].reference, 0)
    return estimator.fit(feature_array(train), train[LABEL_COLUMN].astype("int64"))


def split_edges(estimator: object, row: np.ndarray) -> np.ndarray:
    """Copies of `row` with each tree's root feature set exactly to its threshold and one step either side."""
    flat = FlatEnsemble(estimator)
    roots = flat.roots
    column = flat.feature[roots] % flat.n_features
    threshold = flat.threshold[roots]
    rows = []
    for value in (threshold, np.nextafter(threshold, -np.inf), np.nextafter(threshold, np.inf)):
        edge = np.tile(row, (len(roots), 1))
        edge[np.arange(len(roots)), column] = value
        rows.append(edge)
    # and float32 neighbours: the forest compares float32-rounded inputs
    rounded = threshold.astype(np.float32)
    for value in (rounded, np.nextafter(rounded, np.float32(np.inf))):
        edge = np.tile(row, (len(roots), 1))
        edge[np.arange(len(roots)), column] = value
        rows.append(edge)
    return np.concatenate(rows)


def test_flat_twin_equals_sklearn_on_real_rows(
    fitted: object, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    x = feature_array(split[1])
    flat = FlatEnsemble(fitted)
    np.testing.assert_array_equal(flat.predict_proba(x), fitted.predict_proba(x))
    np.testing.assert_array_equal(flat.predict_proba(x[:1]), fitted.predict_proba(x[:1]))


def test_flat_twin_equals_sklearn_at_exact_thresholds(
    fitted: object, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    x = split_edges(fitted, feature_array(split[1])[0])
    expected = fitted.predict_proba(x)
    np.testing.assert_array_equal(FlatEnsemble(fitted).predict_proba(x), expected)
    # one step above a root threshold changes sklearn's answer for some trees: the edges are real edges
    trees = len(x) // 5
    assert (expected[:trees, 1] != expected[2 * trees : 3 * trees, 1]).any()


def test_flat_twin_sends_missing_values_where_the_splits_do(
    fitted: object, split: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    readings = split[1].head(200).copy()
    readings.loc[::3, "torque_nm"] = np.nan
    readings.loc[1::3, "rotational_speed_rpm"] = np.nan
    readings.loc[::4, "machine_type"] = pd.NA
    x = feature_array(readings)
    assert np.isnan(x).any(axis=1).mean() > 0.5
    np.testing.assert_array_equal(FlatEnsemble(fitted).predict_proba(x), fitted.predict_proba(x))


def test_tree_families_are_wrapped_and_others_are_not() -> None:
    for family in TREE_FAMILIES:
        estimator = FAMILIES[family].make(FAMILIES[family].reference, 0)
        assert flattenable(estimator)
        assert isinstance(build_pipeline(estimator).named_steps["model"], FlatTreeClassifier)
    logreg = LogisticRegression()
    assert not flattenable(logreg)
    assert build_pipeline(logreg).named_steps["model"] is logreg
    with pytest.raises(ValueError, match="cannot flatten"):
        FlatEnsemble(logreg)


def test_wrapped_pipeline_scores_small_and_big_batches_alike(
    split: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, test = split
    readings = test[list(MODEL_INPUT_COLUMNS)]
    pipeline = build_pipeline(FAMILIES["vote"].make(FAMILIES["vote"].reference, 0))
    pipeline.fit(train[list(MODEL_INPUT_COLUMNS)], train[LABEL_COLUMN].astype("int64"))
    model = pipeline.named_steps["model"]
    assert list(model.classes_) == [0, 1]
    big = pipeline.predict_proba(readings)  # scikit-learn's own predict_proba
    assert len(readings) > MAX_FLAT_ROWS
    np.testing.assert_allclose(big, model.estimator_.predict_proba(feature_array(readings)), rtol=1e-9)
    small = np.concatenate([pipeline.predict_proba(readings.iloc[i : i + 1]) for i in range(20)])
    copies = -(-MIN_THREADED_ROWS // len(readings))
    threaded = pipeline.predict_proba(pd.concat([readings] * copies, ignore_index=True))
    np.testing.assert_allclose(threaded, np.tile(big, (copies, 1)), rtol=1e-9)
    np.testing.assert_allclose(small, big[:20], rtol=1e-9, atol=0)
    np.testing.assert_array_equal(pipeline.predict(readings.head(20)), small.argmax(axis=1))
    restored = cloudpickle.loads(cloudpickle.dumps(pipeline))
    np.testing.assert_array_equal(restored.predict_proba(readings.head(5)), small[:5])
    with pytest.raises(ValueError, match="features"):
        model.predict_proba(np.zeros((1, 3)))
