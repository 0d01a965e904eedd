"""Early warning on hand-made fleets: the time-honest split and its gap, the RUL head, and the promotion
gate's lead-time verdict refusing a challenger that warns later (figures from mfd.modeling.early_warning at
the active profile's horizon, lead and debounce: AI4I's 2 h, 1 h and 1 reading here)."""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.preprocessing import FunctionTransformer

from mfd.modeling.early_warning import figures, lead_of
from mfd.modeling.holdout import honest_training_rows, time_honest_ids
from mfd.modeling.lead_time import failures_from_labels, hours_to_failure
from mfd.modeling.model_io import FailureModel
from mfd.modeling.rul import attach, attached, fit_rul_head, rul_errors
from mfd.profiles import MACHINE, TIMESTAMP, load
from mfd.registry import promotion
from mfd.registry.promotion import lead_verdict
from mfd.schema import LABEL_COLUMN, PROFILE

T0 = pd.Timestamp("2024-01-01", tz="UTC")
STEP = pd.Timedelta(minutes=10)
LEGACY = Path(__file__).parent.parent / "data" / "legacy_models"


def fleet(lives: dict[str, int], failing: set[str]) -> pd.DataFrame:
    """Readings every 10 min; a failing machine fails at its last reading and its readings within the
    horizon before it are labelled 1; `wear` grows by one per reading; `rul_h` the hours left."""
    frames = []
    for name, readings in lives.items():
        times = T0 + STEP * np.arange(readings)
        left = (times[-1] - times) / pd.Timedelta(hours=1)
        label = (left <= PROFILE.horizon / pd.Timedelta(hours=1)) & (name in failing)
        frames.append(
            pd.DataFrame(
                {
                    MACHINE: name,
                    TIMESTAMP: times,
                    "wear": np.arange(readings, dtype=float),
                    "rul_h": np.where(name in failing, left, np.nan),
                    LABEL_COLUMN: label.astype("int64"),
                }
            )
        )
    out = pd.concat(frames, ignore_index=True)
    return out.assign(id=np.arange(1, len(out) + 1))


def test_time_split_never_trains_on_a_machines_readings_within_a_gap_before_its_holdout() -> None:
    df = fleet({"a": 300, "b": 200, "c": 250}, {"a", "b"})  # three machines: split in time
    held = time_honest_ids(df, fraction=0.2)
    holdout = df[df["id"].isin(held)]
    gap = pd.Timedelta(hours=2)
    train = honest_training_rows(df, holdout, gap)
    assert not set(train["id"]) & held
    for machine, rows in holdout.groupby(MACHINE):
        trained = train.loc[train[MACHINE] == machine, TIMESTAMP]
        assert len(trained), machine  # the machine's earlier life does train
        assert trained.max() <= rows[TIMESTAMP].min() - gap, machine  # the gap is respected
        left_out = df[(df[MACHINE] == machine) & ~df["id"].isin(held) & ~df["id"].isin(train["id"])]
        assert len(left_out) == gap // STEP - 1, machine  # the readings strictly inside the gap
    # the holdout is each machine's latest readings
    assert (holdout.groupby(MACHINE)[TIMESTAMP].min() > train.groupby(MACHINE)[TIMESTAMP].max()).all()


def test_machine_split_keeps_every_machine_on_one_side() -> None:
    lives = {f"m{i:02d}": 40 + i for i in range(20)}
    df = fleet(lives, {f"m{i:02d}" for i in range(0, 20, 2)})
    held = time_honest_ids(df, fraction=0.2, seed=3)
    holdout = df[df["id"].isin(held)]
    train = honest_training_rows(df, holdout, pd.Timedelta(hours=2))
    assert set(holdout[MACHINE]).isdisjoint(train[MACHINE])
    assert len(set(holdout[MACHINE])) == 4
    assert holdout.groupby(MACHINE)[LABEL_COLUMN].max().tolist().count(1) == 2  # drawn per failed / not
    assert len(train) + len(holdout) == len(df)  # whole machines: nothing to leave out
    assert time_honest_ids(df, fraction=0.2, seed=3) == held  # seeded


def test_hours_to_failure_read_off_the_labels_with_censoring() -> None:
    df = fleet({"a": 30, "b": 30}, {"a"})
    hours = hours_to_failure(df, failures_from_labels(df, LABEL_COLUMN, PROFILE.horizon))
    a = (df[MACHINE] == "a").to_numpy()
    np.testing.assert_allclose(hours[a], df.loc[a, "rul_h"])
    assert np.isnan(hours[~a]).all()  # b never failed: its future is unknown, no target


def test_rul_head_on_a_hand_made_fleet() -> None:
    """Wear grows toward failure at a machine-specific life: the head learns hours left from wear alone
    only up to the cap (the target is capped), and the censored machine teaches it nothing."""
    lives = {f"m{i}": 60 for i in range(6)} | {"censored": 200}
    df = fleet(lives, {f"m{i}" for i in range(6)})
    df["wear"] = df.groupby(MACHINE).cumcount().astype(float)
    hours = hours_to_failure(df, failures_from_labels(df, LABEL_COLUMN, PROFILE.horizon))
    cap = pd.Timedelta(hours=5)
    features = FunctionTransformer(lambda x: x[["wear"]].to_numpy())
    head = fit_rul_head(features, df, hours, cap, regressor=LinearRegression())
    assert head is not None and head.cap_hours == 5.0
    # the fit saw only failing machines' readings: the censored machine's 200 would have bent the line
    assert head.pipeline[-1].n_features_in_ == 1
    estimate = head.predict(df)
    assert estimate.min() >= 0.0 and estimate.max() <= 5.0
    failing = df[MACHINE] != "censored"
    truth = np.minimum(df.loc[failing, "rul_h"], 5.0)
    assert np.sqrt(np.mean((estimate[failing.to_numpy()] - truth) ** 2)) < 1.5
    late = failing & (df["rul_h"] <= 0.5)
    assert estimate[late.to_numpy()].max() < 2.5  # near failure the estimate is low
    errors = rul_errors(df, estimate)
    assert errors["rul_rows"] == failing.sum()
    assert fit_rul_head(features, df, np.full(len(df), np.nan), cap) is None  # all censored: no head


def test_a_model_without_a_head_estimates_no_rul() -> None:
    """A version registered before RUL heads (the legacy pickles) loads and answers None; a model
    carrying a head keeps it through pickling (attach / attached)."""
    pyfunc = mlflow.pyfunc.load_model(str(LEGACY / "hgb"))
    model = FailureModel("legacy", "1", 0.5, pyfunc)
    rows = pd.read_csv(LEGACY / "rows.csv")
    assert model.estimate_rul(rows) is None
    assert len(model.probability(rows)) == len(rows)
    carrier = attach(LinearRegression(), None)
    assert attached(carrier) is None


def scores(df: pd.DataFrame, warn_before: pd.Timedelta, false_alarm_at: set[str] = frozenset()) -> np.ndarray:
    """0.9 from `warn_before` ahead of each failure on, else 0.1; 0.9 for three readings early in the life
    of the machines in `false_alarm_at` (one false alarm each)."""
    failures = failures_from_labels(df, LABEL_COLUMN, PROFILE.horizon)
    hours = hours_to_failure(df, failures)
    high = np.isfinite(hours) & (hours <= warn_before / pd.Timedelta(hours=1))
    early = df[MACHINE].isin(false_alarm_at) & df.groupby(MACHINE).cumcount().between(5, 7)
    return np.where(high | early.to_numpy(), 0.9, 0.1)


@pytest.fixture(scope="module")
def gate_fleet() -> pd.DataFrame:
    lives = {f"m{i}": 6 * 24 * 3 for i in range(6)}  # three days every 10 min
    return fleet(lives, {"m0", "m1", "m2", "m3"})


def test_the_gate_refuses_a_challenger_that_warns_later(gate_fleet: pd.DataFrame) -> None:
    champion = figures(lead_of(gate_fleet, scores(gate_fleet, pd.Timedelta(minutes=100)), 0.5))
    later = figures(lead_of(gate_fleet, scores(gate_fleet, pd.Timedelta(minutes=30)), 0.5))
    assert (champion["lead_share_warned"], later["lead_share_warned"]) == (1.0, 0.0)  # lead 1 h
    assert champion["lead_false_alarms_per_machine_day"] == later["lead_false_alarms_per_machine_day"] == 0
    passed, reason = lead_verdict(later, champion)
    assert not passed and "warns fewer failures in time" in reason, reason
    assert lead_verdict(champion, later)[0]  # the earlier warner replaces the later one
    assert lead_verdict(champion, champion)[0]  # a tie passes


def test_the_gate_refuses_more_false_alarms_at_the_same_recall(gate_fleet: pd.DataFrame) -> None:
    champion = figures(lead_of(gate_fleet, scores(gate_fleet, pd.Timedelta(minutes=100)), 0.5))
    noisy = figures(lead_of(gate_fleet, scores(gate_fleet, pd.Timedelta(minutes=100), {"m4", "m5"}), 0.5))
    assert noisy["lead_share_warned"] == champion["lead_share_warned"] == 1.0
    assert noisy["lead_false_alarms_per_machine_day"] > 0 == champion["lead_false_alarms_per_machine_day"]
    passed, reason = lead_verdict(noisy, champion)
    assert not passed and "more false alarms" in reason, reason
    # without machine and time (snapshot holdouts) there is nothing to compare: the metric decides
    assert lead_verdict({}, champion) == (True, "no lead-time figures to compare")


def test_the_gate_weighs_lead_time_only_where_machines_run_to_failure(
    gate_fleet: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The challenger wins on PR AUC but warns later: snapshot data (AI4I) promotes it on the metric; a
    profile whose machines run to failure (cmapss) refuses it, naming both figures."""
    champion = figures(lead_of(gate_fleet, scores(gate_fleet, pd.Timedelta(minutes=100)), 0.5))
    later = figures(lead_of(gate_fleet, scores(gate_fleet, pd.Timedelta(minutes=30)), 0.5))
    champion, later = champion | {"pr_auc": 0.80}, later | {"pr_auc": 0.90}
    assert promotion._gate("pr_auc", 0.005, later, champion)[0]
    monkeypatch.setattr(promotion, "PROFILE", load("cmapss"))
    passed, reason = promotion._gate("pr_auc", 0.005, later, champion)
    assert not passed, reason
    assert reason.startswith(
        "champion kept: the challenger warns fewer failures in time (warned 0.000 vs 1.000"
    )
