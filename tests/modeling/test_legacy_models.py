"""Models pickled before the layout change (references to mfd.model, mfd.tree_predictor, mfd.torch_mlp)
still load through mlflow.pyfunc and give the probabilities they gave when they were saved."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

LEGACY = Path(__file__).parent.parent / "data" / "legacy_models"
EXPECTED = json.loads((LEGACY / "expected.json").read_text())


@pytest.mark.parametrize("family", sorted(EXPECTED["probability"]))
def test_model_saved_before_the_move_loads_and_scores_the_same(family: str) -> None:
    pickled = (LEGACY / family / "model.pkl").read_bytes()
    assert b"mfd.model" in pickled  # the file really references the old path
    rows = pd.read_csv(LEGACY / "rows.csv")
    model = mlflow.pyfunc.load_model(str(LEGACY / family))
    probability = np.asarray(model.predict(rows))[:, 1]
    np.testing.assert_allclose(probability, EXPECTED["probability"][family], rtol=0, atol=1e-6)


def test_old_paths_are_the_new_modules() -> None:
    import mfd.model
    import mfd.modeling.pipeline
    import mfd.modeling.tree_predictor
    import mfd.tree_predictor

    assert mfd.model is mfd.modeling.pipeline
    assert mfd.tree_predictor.FlatTreeClassifier is mfd.modeling.tree_predictor.FlatTreeClassifier
