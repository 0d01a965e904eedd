"""The registered model takes what a CSV gives: integer speeds and tool wear as in the AI4I file itself."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.modeling.model_io import log_failure_model
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.storage.tracking import connect

AI4I_FILE = Path(__file__).parents[2] / "mfd" / "data" / "ai4i2020.csv"
FILE_COLUMNS = {
    "Type": "machine_type",
    "Air temperature [K]": "air_temperature_k",
    "Process temperature [K]": "process_temperature_k",
    "Rotational speed [rpm]": "rotational_speed_rpm",
    "Torque [Nm]": "torque_nm",
    "Tool wear [min]": "tool_wear_min",
}


def test_the_champion_scores_the_ai4i_files_own_dtypes_through_pyfunc(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = connect(uri)
    experiment = client.create_experiment("signature", artifact_location=(tmp_path / "artifacts").as_uri())
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0))
    pipeline.fit(ai4i[list(MODEL_INPUT_COLUMNS)], ai4i["machine_failure"].astype(int))
    with mlflow.start_run(experiment_id=experiment):
        _, version = log_failure_model(pipeline, ai4i, registered_name="sig", threshold=0.5)
    client.set_registered_model_alias("sig", "champion", version.version)

    raw = pd.read_csv(AI4I_FILE).rename(columns=FILE_COLUMNS)[list(MODEL_INPUT_COLUMNS)]
    assert raw["rotational_speed_rpm"].dtype == np.int64 and raw["tool_wear_min"].dtype == np.int64
    champion = mlflow.pyfunc.load_model("models:/sig@champion")
    from_ints = np.asarray(champion.predict(raw))[:, 1]
    from_floats = np.asarray(champion.predict(raw.astype({c: "float64" for c in MODEL_INPUT_COLUMNS[1:]})))[
        :, 1
    ]
    np.testing.assert_array_equal(from_ints, from_floats)
    np.testing.assert_allclose(from_ints, pipeline.predict_proba(ai4i[list(MODEL_INPUT_COLUMNS)])[:, 1])
    with pytest.raises(ValueError, match="could not convert string to float"):
        champion.predict(raw.head(3).assign(torque_nm="sensor-error"))
