"""A batch explains at most its budget of events with SHAP: each machine's first event, then the most
probable; every event gets its nearest physics rule."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier

from mfd.alerts.explanations import Explainer
from mfd.detection.batches import explain_events, explained_first
from mfd.modeling.pipeline import build_pipeline
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN


def test_each_machines_first_event_then_the_most_probable() -> None:
    failed = pd.DataFrame({"machine_id": ["a", "a", "b", "a", "c", "b"]})
    probability = np.array([0.6, 0.99, 0.7, 0.95, 0.51, 0.9])
    # firsts: rows 0 (a), 2 (b), 4 (c); then by probability: 1 (0.99), 3 (0.95), 5 (0.9)
    assert explained_first(failed, probability, 3).tolist() == [True, False, True, False, True, False]
    assert explained_first(failed, probability, 4).tolist() == [True, True, True, False, True, False]
    assert explained_first(failed, probability, 10).all()


def test_events_over_the_budget_keep_their_rule_but_no_shap() -> None:
    ai4i = load_ai4i()
    pipeline = build_pipeline(HistGradientBoostingClassifier(max_iter=20, random_state=0))
    pipeline.fit(ai4i, ai4i[LABEL_COLUMN].astype(int))
    failed = ai4i[ai4i[LABEL_COLUMN] == 1].head(6).assign(machine_id=["a", "a", "b", "b", "c", "c"])
    probability = pipeline.predict_proba(failed)[:, 1]
    out = explain_events(None, failed, probability, limit=4, explainer=Explainer(pipeline))  # type: ignore[arg-type]
    explained = out["explainer"] == "shap tree"
    assert explained.sum() == 4 and explained.loc[failed.index[[0, 2, 4]]].all()
    assert out.loc[~explained, "top_features"].map(json.loads).map(len).eq(0).all()
    assert out.loc[explained, "top_features"].map(json.loads).map(len).gt(0).all()
    assert out["explainer"][~explained].str.contains("over the batch's budget of 4").all()
    assert (
        out["nearest_rule"].map(lambda r: r["rule"]).isin(["heat_dissipation", "power", "overstrain"]).all()
    )


def test_a_budget_of_zero_gives_rules_only_and_never_builds_an_explainer() -> None:
    ai4i = load_ai4i()
    failed = ai4i[ai4i[LABEL_COLUMN] == 1].head(3).assign(machine_id=["a", "b", "c"])
    # model None: building an explainer would fail, so the rules-only path must not reach it
    out = explain_events(None, failed, np.array([0.9, 0.8, 0.7]), limit=0)  # type: ignore[arg-type]
    assert out["top_features"].eq("[]").all()
    assert out["explainer"].str.contains("budget of 0").all()
    assert out["nearest_rule"].map(lambda r: r["rule"]).notna().all()
