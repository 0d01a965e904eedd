"""SHAP explanations add up to the model's output; the nearest physics rule and its margin."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mfd.alerts.explanations import Explainer, top_features
from mfd.alerts.rules import nearest_rules, rule_hits, rule_margins
from mfd.features import FEATURE_COLUMNS
from mfd.modeling.calibration import CalibratedModel, Calibrator
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN


@pytest.fixture(scope="module")
def ai4i() -> pd.DataFrame:
    return load_ai4i()


@pytest.mark.parametrize(
    ("estimator", "kind", "output"),
    [
        (HistGradientBoostingClassifier(max_iter=40, random_state=0), "tree", "log-odds"),
        (RandomForestClassifier(n_estimators=20, random_state=0), "tree", "probability"),
        (make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), "sampled", "probability"),
    ],
)
def test_shap_values_sum_to_the_model_output(ai4i: pd.DataFrame, estimator, kind: str, output: str) -> None:
    pipeline = build_pipeline(estimator).fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    rows = pd.concat([ai4i[ai4i[LABEL_COLUMN] == 1].head(8), ai4i.head(4)])
    explainer = Explainer(pipeline)
    explanation = explainer.explain(rows)
    assert (explainer.kind, explanation.output) == (kind, output)
    assert list(explanation.values.columns) == list(FEATURE_COLUMNS)
    total = explanation.values.sum(axis=1).to_numpy() + explanation.base_value
    np.testing.assert_allclose(total, explainer.model_output(rows), atol=1e-6)
    if output == "probability":  # the pipeline's own probability, not a re-implementation of it
        np.testing.assert_allclose(total, pipeline.predict_proba(rows)[:, 1], atol=1e-6)

    top = [json.loads(t) for t in top_features(rows, explanation)]
    for features, (_, values) in zip(top, explanation.values.iterrows(), strict=True):
        assert len(features) <= 3
        assert [f["attribution"] for f in features] == sorted(
            (f["attribution"] for f in features), reverse=True
        )
        assert all(f["attribution"] > 0 for f in features)
        if features:
            assert features[0]["feature"] == values.idxmax()
        assert not {f["feature"] for f in features} & set(FAILURE_MODE_COLUMNS)


def test_a_calibrated_tree_model_keeps_the_tree_explainer(ai4i: pd.DataFrame) -> None:
    """Candidates are calibrated now: SHAP explains the tree inside (calibration is monotone), not the
    slow sampled explainer, and the features it ranks first still push towards failure."""
    y = ai4i[LABEL_COLUMN].astype(int)
    tree = build_pipeline(HistGradientBoostingClassifier(max_iter=40, random_state=0)).fit(ai4i, y)
    features, inner = tree.named_steps["features"], tree.steps[-1][1]
    calibrator = Calibrator("sigmoid").fit(inner.predict_proba(features.transform(ai4i))[:, 1], y)
    tree.steps[-1] = (tree.steps[-1][0], CalibratedModel(inner, calibrator))
    rows = ai4i[ai4i[LABEL_COLUMN] == 1].head(8)
    explainer = Explainer(tree)
    explanation = explainer.explain(rows)
    assert explainer.kind == "tree" and explanation.output == "log-odds"
    total = explanation.values.sum(axis=1).to_numpy() + explanation.base_value
    boosted = getattr(inner, "estimator_", inner)
    np.testing.assert_allclose(
        total, np.ravel(boosted.decision_function(features.transform(rows))), atol=1e-6
    )


def reading(machine_type: str = "L", **sensors: float) -> dict[str, object]:
    base = {
        "machine_type": machine_type,
        "air_temperature_k": 300.0,
        "process_temperature_k": 310.0,
        "rotational_speed_rpm": 1500.0,
        "torque_nm": 40.0,
        "tool_wear_min": 100.0,
    }
    return base | sensors


def test_nearest_rule_and_margin_per_physics_rule() -> None:
    rows = pd.DataFrame(
        [
            # dT 8.0 K at 1300 rpm: heat dissipation fires; the farther condition: (1300-1380)/1380
            reading(process_temperature_k=308.0, rotational_speed_rpm=1300.0, torque_nm=50.0),
            # 10 Nm at 3000 rpm: 3142 W < 3500 W
            reading(rotational_speed_rpm=3000.0, torque_nm=10.0),
            # M: wear 250 x torque 47 = 11750 < 12000 -> not firing, margin 250/12000
            reading("M", tool_wear_min=250.0, torque_nm=47.0, rotational_speed_rpm=1500.0),
            # L: the same 11750 > 11000 fires
            reading("L", tool_wear_min=250.0, torque_nm=47.0, rotational_speed_rpm=1500.0),
        ]
    )
    nearest = nearest_rules(rows)
    assert [n["rule"] for n in nearest] == ["heat_dissipation", "power", "overstrain", "overstrain"]
    assert [n["fires"] for n in nearest] == [True, True, False, True]
    assert nearest[0]["margin"] == pytest.approx(max(-0.6 / 8.6, -80 / 1380), abs=1e-4)
    power = 10.0 * 3000.0 * 2 * np.pi / 60
    assert nearest[1]["margin"] == pytest.approx((power - 3500) / 3500, abs=1e-4)
    assert nearest[2]["margin"] == pytest.approx(250 / 12000, abs=1e-4)
    assert nearest[3]["margin"] == pytest.approx(-750 / 11000, abs=1e-4)
    assert "11750 min.Nm (fires above 12000 for M)" in nearest[2]["detail"]
    assert rule_hits(rows).tolist() == [True, True, False, True]


def test_rules_reproduce_the_ai4i_failure_modes(ai4i: pd.DataFrame) -> None:
    fired = rule_margins(ai4i) <= 0
    assert (fired["heat_dissipation"] == (ai4i["hdf"] == 1)).all()
    assert (fired["power"] == (ai4i["pwf"] == 1)).all()
    assert (fired["overstrain"] == (ai4i["osf"] == 1)).all()
