"""Replay: the figures of a hand-computed case, and a replay over real PostgreSQL with real registered
models (the champion fixture's MLflow server), maintenance labels included."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from mfd.modeling.early_warning import figures, lead_of
from mfd.modeling.model_io import CHAMPION, load_version
from mfd.preparation.labels import read_maintenance
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.registry.replay import (
    FIGURES,
    LEAD_FIGURES,
    labelled_failures,
    replay_figure,
    replay_figures,
    replay_models,
)
from mfd.storage import readings as store
from mfd.storage.tables import maintenance_records
from mfd_assets.training import (
    CandidateModelConfig,
    ChampionModelConfig,
    candidate_model,
    champion_model,
    holdout,
)
from mfd_resources import ReadingsStore, Tracking

DAY = pd.Timestamp("2026-03-02", tz="UTC")
HOUR = pd.Timedelta(hours=1)


def at(hours: float) -> pd.Timestamp:
    return DAY + hours * HOUR


# machine, hours after DAY, label, alert of model X, alert of model Y
CASE = [
    ("A", 0.0, 0, 0, 0),
    ("A", 1.0, 0, 1, 0),  # X alerts 60 min before the 02:00 failure
    ("A", 1.5, 1, 1, 0),
    ("A", 2.0, 1, 0, 1),  # one failure (01:30 and 02:00 are 30 min apart), at 02:00; Y alerts at it: lead 0
    ("A", 3.5, 0, 0, 1),  # Y: 1.5 h before the 05:00... no: the next failure is at 06:00: a false alarm
    ("A", 5.5, 0, 1, 0),  # X alerts 30 min before the 06:00 failure
    ("A", 6.0, 1, 0, 0),  # a second failure: 4 h after the first
    ("B", 0.0, 0, 1, 0),  # X: B never fails: a false alarm
    ("B", 30.0, None, 0, 0),  # unlabelled, the next day: B has readings on two days
]


def case_frame() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    df = pd.DataFrame(CASE, columns=["machine_id", "hours", "machine_failure", "x", "y"])
    df["timestamp"] = [at(h) for h in df["hours"]]
    df["machine_failure"] = df["machine_failure"].astype("Int8")
    return df, df["x"].to_numpy(bool), df["y"].to_numpy(bool)


def test_replay_figures_match_the_hand_computed_case() -> None:
    frame, x, y = case_frame()
    failures = labelled_failures(frame, HOUR)
    assert list(zip(failures["machine_id"], failures["timestamp"], strict=True)) == [
        ("A", at(2)),
        ("A", at(6)),
    ]
    # machine-days: A on day 1, B on days 1 and 2 -> 3
    assert replay_figures(frame, x, HOUR) == {
        "alerts": 4,
        "alerts_per_machine_day": pytest.approx(4 / 3),
        "failures": 2,
        "caught": 2,
        "median_lead_min": 45.0,  # 60 and 30
        "false_alarms": 1,  # B at 00:00
    }
    assert replay_figures(frame, y, HOUR) == {
        "alerts": 2,
        "alerts_per_machine_day": pytest.approx(2 / 3),
        "failures": 2,
        "caught": 1,
        "median_lead_min": 0.0,
        "false_alarms": 1,  # A at 03:30
    }
    narrow = replay_figures(frame, x, pd.Timedelta(minutes=45))  # the 60-min alert no longer counts
    assert (narrow["caught"], narrow["median_lead_min"], narrow["false_alarms"]) == (2, 30.0, 2)


@pytest.mark.integration
def test_replay_reads_the_last_days_with_maintenance_labels(
    pg_url: str, champion: Tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    ai4i = load_ai4i().head(2000).copy()
    ai4i["machine_id"] = "M-" + (ai4i.index % 4).astype(str)
    ai4i["timestamp"] = DAY + pd.to_timedelta(ai4i.index * 18, unit="min")  # 2000 readings over 25 days
    ai4i.loc[ai4i.index >= 1700, "machine_failure"] = pd.NA  # the newest readings came unlabelled
    readings = ReadingsStore(url=pg_url)
    readings.insert(ai4i)
    newest = ai4i["timestamp"].max()
    model = load_version(champion.client(), champion.model_name, CHAMPION)
    recent = ai4i[ai4i["timestamp"] >= newest - pd.Timedelta(days=3)]
    alert = model.probability(recent) >= model.threshold
    alerted = recent[alert & recent["machine_failure"].isna().to_numpy()].iloc[0]  # an unlabelled alert
    record_at = alerted["timestamp"] + pd.Timedelta(minutes=30)  # maintenance found a failure after it
    with readings.engine.begin() as conn:
        conn.execute(
            maintenance_records.insert(),
            [
                {
                    "work_order_id": "WO-1",
                    "machine_id": alerted["machine_id"],
                    "timestamp": record_at,
                    "outcome": "hdf",
                }
            ],
        )

    replay = replay_models(readings.engine, {"champion": model, "again": model}, days=3, horizon=2 * HOUR)

    assert replay.readings == len(recent) == 241
    labels = recent["machine_failure"].astype("Int8").copy()
    machine = recent["machine_id"] == alerted["machine_id"]
    in_window = machine & recent["timestamp"].between(record_at - 2 * HOUR, record_at)
    assert in_window.sum() > 0 and labels[in_window].isna().all()
    labels[in_window] = 1
    expected = replay_figures(recent.assign(machine_failure=labels), alert, 2 * HOUR)
    assert expected["caught"] >= 1 and expected["median_lead_min"] >= 0
    assert replay.table.loc["champion", list(FIGURES)].to_dict() == pytest.approx(expected, nan_ok=True)
    assert replay.table.loc["again", list(FIGURES)].to_dict() == pytest.approx(expected, nan_ok=True)
    # the early-warning figures at the operating threshold, the same for the same model
    lead = figures(lead_of(recent.assign(machine_failure=labels), model.probability(recent), model.threshold))
    for key in LEAD_FIGURES:
        assert replay.table.loc["champion", key] == pytest.approx(lead[key], nan_ok=True), key
    assert replay.not_worse("again", "champion")[0]
    assert len(read_maintenance(readings.engine)) == 1
    assert replay_figure(replay).axes and store.count_readings(readings.engine) == 2000


@pytest.mark.integration
def test_the_gate_keeps_the_champion_when_the_replay_is_worse(
    pg_url: str, champion: Tracking, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fixture's champion learnt all of AI4I; a two-fold logistic regression catches fewer of its
    failures in the replay, so even a margin of -1 on the holdout does not promote it."""
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    ai4i = load_ai4i()
    readings = ReadingsStore(url=pg_url)
    readings.insert(ai4i.head(3000))
    frame = ai4i.head(3000).copy()
    frame.insert(0, "id", np.arange(1, len(frame) + 1, dtype="int64"))

    @dg.asset(name="training_set")
    def training_set() -> pd.DataFrame:
        return frame

    @dg.asset(name="cleaned_set", deps=[training_set])
    def cleaned_set() -> pd.DataFrame:
        return frame

    client = champion.client()
    before = client.get_model_version_by_alias(champion.model_name, CHAMPION).version
    result = dg.materialize(
        [training_set, cleaned_set, holdout, candidate_model, champion_model],
        resources={"tracking": champion, "readings_store": readings},
        run_config=dg.RunConfig(
            {
                "candidate_model": CandidateModelConfig(family="logreg", folds=2, trials=1),
                "champion_model": ChampionModelConfig(
                    margin=-1.0, replay_days=400, require_replay_not_worse=True
                ),
            }
        ),
    )
    [event] = result.asset_materializations_for_node("champion_model")
    meta = {k: v.value for k, v in event.metadata.items()}
    assert meta["replay_readings"] == 3000
    assert len(meta["replay"].records) == 2 and "data:image/png;base64," in meta["replay_plot"]
    assert meta["replay_verdict"].startswith("replay worse"), meta["replay_verdict"]
    assert meta["promoted"] is False and meta["reason"].startswith("champion kept: replay worse")
    assert client.get_model_version_by_alias(champion.model_name, CHAMPION).version == before
