"""Detection's scoring path: the raw pipeline in row chunks on threads gives pyfunc's probabilities."""

from __future__ import annotations

import mlflow
import numpy as np
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.generator import generate_readings
from mfd.modeling.model_io import FailureModel, signature
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.modeling.tree_predictor import CHUNK_ROWS, chunked_predict_proba
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN


@pytest.fixture(scope="module")
def pipeline() -> object:
    ai4i = load_ai4i()
    model = build_pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0))
    return model.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))


def test_chunks_on_threads_give_the_one_call_row_for_row(pipeline: object) -> None:
    readings = generate_readings(machines=10, rows=2 * CHUNK_ROWS + 123, seed=4)[list(MODEL_INPUT_COLUMNS)]
    whole = pipeline.predict_proba(readings)
    chunked = chunked_predict_proba(pipeline, readings, threads=2)
    assert chunked.shape == whole.shape
    np.testing.assert_array_equal(chunked, whole)


def test_probability_of_valid_skips_schema_enforcement_but_not_the_model(pipeline: object, tmp_path) -> None:
    readings = generate_readings(machines=5, rows=CHUNK_ROWS + 50, seed=5)
    inputs = readings[list(MODEL_INPUT_COLUMNS)]
    mlflow.sklearn.save_model(
        pipeline,
        str(tmp_path / "model"),
        serialization_format="cloudpickle",
        pyfunc_predict_fn="predict_proba",
        signature=signature(inputs.head(5), pipeline.predict_proba(inputs.head(5))),
    )
    model = FailureModel("m", "1", 0.5, mlflow.pyfunc.load_model(str(tmp_path / "model")))
    assert model._sklearn_model() is not None
    np.testing.assert_array_equal(
        model.probability_of_valid(readings, threads=2), model.probability(readings)
    )
    assert model.probability_of_valid(readings.head(0), threads=2).shape == (0,)  # an all-invalid batch
