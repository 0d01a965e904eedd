"""The registry's records as MLflow tags: a record reads back what it writes, in the formats older versions
of mfd wrote, and the tags older versions left on their model versions read back as records."""

from __future__ import annotations

import math

import pytest

from mfd.alerts.costs import matrix_json, parse_cost_matrix
from mfd.errors import MfdError
from mfd.registry.gate import Rule, decide, decide_shadowed
from mfd.registry.tags import ChampionRecord, GateRecord, VersionRecord

MATRIX = parse_cost_matrix(None)

# Tags exactly as versions of mfd before this record type wrote them (the formats of commit b67b2df's
# `promote_candidate`, `_record_gate`, `_set_champion` and `register_logged_model`).
BEFORE_THE_GATE = {  # a version registered before the cost matrix and the gate record existed
    "mlflow_run_id": "abc",
    "threshold": "0.42",
    "evaluation": "passed",
    "holdout_pr_auc": "0.812345",
    "holdout_roc_auc": "0.970000",
    "promoted_at": "2026-01-02T03:04:05+00:00",
    "promotion_reason": "first champion: none existed",
    "demoted_at": "2026-02-02T03:04:05+00:00",
}
REPLAY_BLOCKED = {  # a version the replay kept out with the old unreachable margin
    "evaluation": "passed",
    "holdout_pr_auc": "0.900000",
    "thresholds": '{"H": 0.5, "L": 0.31, "M": 0.4}',
    "cost_matrix": matrix_json(MATRIX),  # the default matrix, as `promote_candidate` wrote it
    "gate_champion": "3",
    "gate_metric": "pr_auc",
    "gate_margin": "inf",
    "gate_holdout_verdict": "failed",
    "gate_holdout_reason": "champion kept: challenger not better by the margin: pr_auc 0.9000 vs 0.8000",
    "gate_champion_score_pr_auc": "0.800000",
    "gate_shadow_verdict": "too little shadow evidence: 0 readings",
}


def test_a_version_registered_before_the_gate_reads_back() -> None:
    record = VersionRecord.from_tags(BEFORE_THE_GATE)
    assert record.evaluation == "passed"
    assert record.holdout_scores == {"pr_auc": 0.812345, "roc_auc": 0.97}
    assert record.thresholds == {} and record.cost_matrix is None and record.gate is None
    assert VersionRecord.with_policy({"L": 0.3}, MATRIX).to_tags() == {
        "thresholds": '{"L": 0.3}',
        "cost_matrix": matrix_json(MATRIX),
    }
    assert record.promoted_at == "2026-01-02T03:04:05+00:00" and record.demoted_at
    assert record.promotion_reason == "first champion: none existed" and record.rolled_back_at is None
    # written again, the record's own tags come back unchanged (the model's own, e.g. threshold, are not its)
    assert record.to_tags() == {
        k: v for k, v in BEFORE_THE_GATE.items() if k not in ("mlflow_run_id", "threshold")
    }


def test_a_version_the_old_infinite_margin_kept_out_reads_back_as_failing_the_gate() -> None:
    record = VersionRecord.from_tags(REPLAY_BLOCKED)
    assert record.thresholds == {"H": 0.5, "L": 0.31, "M": 0.4}
    assert record.cost_matrix == MATRIX
    gate = record.gate
    assert gate is not None and gate.champion == "3" and not gate.passed and gate.margin == math.inf
    assert gate.metric == "pr_auc" and gate.champion_scores == {"pr_auc": 0.8}
    assert gate.reason.startswith("champion kept") and record.shadow_reason.startswith("too little")
    assert record.to_tags() == REPLAY_BLOCKED


def test_a_gate_record_without_a_margin_or_metric_reads_as_unknown() -> None:
    gate = GateRecord.from_tags({"gate_champion": "2", "gate_holdout_verdict": "passed"})
    assert gate is not None and gate.passed and gate.metric == "" and math.isnan(gate.margin)
    assert gate.reason == "" and gate.champion_scores == {}


def test_records_write_the_old_formats_and_read_them_back() -> None:
    gate = GateRecord("4", True, "challenger beats the champion", "pr_auc", 0.005, {"pr_auc": 0.81234567})
    record = VersionRecord(
        evaluation="passed",
        holdout_scores={"pr_auc": 0.9, "expected_cost": 1.5},
        thresholds={"L": 0.3},
        cost_matrix_json=matrix_json(MATRIX),
        gate=gate,
        shadow_reason="x" * 5000,
    )
    tags = record.to_tags()
    assert tags["gate_margin"] == "0.005" and tags["gate_holdout_verdict"] == "passed"
    assert tags["gate_champion_score_pr_auc"] == "0.812346" and tags["holdout_expected_cost"] == "1.500000"
    assert tags["thresholds"] == '{"L": 0.3}' and len(tags["gate_shadow_verdict"]) == 4000
    back = VersionRecord.from_tags(tags)
    assert back.gate == GateRecord(
        "4", True, "challenger beats the champion", "pr_auc", 0.005, {"pr_auc": 0.812346}
    )
    assert back.holdout_scores == record.holdout_scores and back.cost_matrix == MATRIX
    assert VersionRecord(demoted_at="t").to_tags() == {"demoted_at": "t"}  # a part writes only its fields


def test_the_champion_record_keeps_the_last_fifty_and_moves_a_promoted_version_last() -> None:
    old = ChampionRecord.from_tags({"champion_history": "1,2,3", "champion_version": "3"})
    assert old == ChampionRecord(("1", "2", "3"), "3")
    assert old.promoted("2").to_tags() == {"champion_history": "1,3,2", "champion_version": "2"}
    assert ChampionRecord.from_tags({}) == ChampionRecord((), None)
    long = ChampionRecord(tuple(str(v) for v in range(60)), "59")
    assert long.to_tags()["champion_history"].split(",") == [str(v) for v in range(10, 60)]


def test_decide_keeps_the_champion_for_a_named_reason_and_records_the_holdout_as_failed() -> None:
    rule = Rule("pr_auc", 0.005)
    better, worse = {"pr_auc": 0.9}, {"pr_auc": 0.8}
    assert decide("2", better, worse, rule).promoted
    kept = decide("2", better, worse, rule, keep_champion="replay worse: fewer failures caught")
    assert not kept.promoted and kept.holdout[0] is False
    assert kept.reason.startswith(
        "champion kept: replay worse: fewer failures caught (holdout: challenger beats"
    )
    first = decide("1", better, None, rule, keep_champion="replay worse")
    assert first.promoted and first.reason == "first champion: none existed"
    assert decide("1", better, None, rule, problem="alias missing").reason == "first champion (alias missing)"
    lower = Rule("expected_cost", 0.0)
    assert decide("2", {"expected_cost": 1.0}, {"expected_cost": 2.0}, lower).promoted


@pytest.mark.parametrize(
    ("recorded", "expected"),
    [
        (None, "has no recorded holdout verdict"),
        (GateRecord("1", True, "won"), "was compared on the holdout with version 1"),
    ],
)
def test_a_shadowed_challenger_without_a_gate_against_todays_champion_is_refused(recorded, expected) -> None:
    outcome = decide_shadowed("3", "2", recorded, shadow=None, gate=None)
    assert not outcome.promoted and expected in outcome.reason


def test_a_cost_matrix_of_another_profile_reads_back_and_only_fails_when_used() -> None:
    other = '{"Z": {"missed_failure": 1, "false_stop": 1, "late_alarm": 1}}'
    record = VersionRecord.from_tags({"cost_matrix": other, "thresholds": "not json", "gate_margin": "x"})
    assert record.cost_matrix_json == other and record.thresholds == {} and record.gate is None
    assert record.to_tags() == {"cost_matrix": other}
    with pytest.raises(MfdError, match="unknown machine type"):
        _ = record.cost_matrix
