"""What the registry keeps about the champion, as MLflow tags: one record per model version
(`VersionRecord`) and one per registered model (`ChampionRecord`), each with `to_tags` and `from_tags`, so
every tag name is spelled here once (the policy's `thresholds` / `cost_matrix` in `mfd.alerts.costs`).

A record written in parts (at registration, after the evaluation, at the gate, at promotion) sets only the
tags of the fields it holds. `from_tags` reads what any version of mfd wrote: the tag names and formats never
changed, only more of them came (versions registered before the gate have no `gate_*` tags, `gate_margin`
is missing or `inf` on older ones)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from mfd.alerts.costs import (
    COST_MATRIX_TAG,
    THRESHOLDS_TAG,
    CostMatrix,
    matrix_json,
    parse_cost_matrix,
    parse_thresholds,
    thresholds_json,
)

# on the registered model
HISTORY_TAG = "champion_history"
CHAMPION_TAG = "champion_version"
HISTORY_LIMIT = 50
# on a version
EVALUATION_TAG = "evaluation"
HOLDOUT_PREFIX = "holdout_"
PROMOTED_AT_TAG = "promoted_at"
PROMOTION_REASON_TAG = "promotion_reason"
DEMOTED_AT_TAG = "demoted_at"
ROLLED_BACK_AT_TAG = "rolled_back_at"
# the gate's record on a version (what `promote_challenger` decides on once the version has shadowed)
GATE_CHAMPION_TAG = "gate_champion"
HOLDOUT_VERDICT_TAG = "gate_holdout_verdict"
HOLDOUT_REASON_TAG = "gate_holdout_reason"
GATE_METRIC_TAG = "gate_metric"
GATE_MARGIN_TAG = "gate_margin"
CHAMPION_SCORE_PREFIX = "gate_champion_score_"
SHADOW_VERDICT_TAG = "gate_shadow_verdict"

PASSED, FAILED = "passed", "failed"
TEXT_LIMIT = 4000  # MLflow's limit on a tag value; longer reasons are cut


def _scores_tags(scores: Mapping[str, float], prefix: str) -> dict[str, str]:
    return {f"{prefix}{key}": f"{value:.6f}" for key, value in scores.items()}


def _scores(tags: Mapping[str, str], prefix: str) -> dict[str, float]:
    """The numeric tags starting with `prefix`, without it (e.g. `holdout_pr_auc` -> `pr_auc`)."""
    out = {}
    for key, value in tags.items():
        if key.startswith(prefix):
            try:
                out[key[len(prefix) :]] = float(value)
            except ValueError:
                continue
    return out


@dataclass(frozen=True)
class GateRecord:
    """The holdout verdict of a version against `champion` (and that champion's scores on the same rows)."""

    champion: str
    passed: bool
    reason: str
    metric: str = ""
    margin: float = math.nan
    champion_scores: dict[str, float] = field(default_factory=dict)

    def to_tags(self) -> dict[str, str]:
        return {
            GATE_CHAMPION_TAG: self.champion,
            GATE_METRIC_TAG: self.metric,
            GATE_MARGIN_TAG: str(self.margin),
            HOLDOUT_VERDICT_TAG: PASSED if self.passed else FAILED,
            HOLDOUT_REASON_TAG: self.reason[:TEXT_LIMIT],
            **_scores_tags(self.champion_scores, CHAMPION_SCORE_PREFIX),
        }

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> GateRecord | None:
        """None when the version was never compared with a champion."""
        if GATE_CHAMPION_TAG not in tags:
            return None
        try:
            margin = float(tags.get(GATE_MARGIN_TAG, "nan"))
        except ValueError:
            margin = math.nan
        return cls(
            champion=tags[GATE_CHAMPION_TAG],
            passed=tags.get(HOLDOUT_VERDICT_TAG) == PASSED,
            reason=tags.get(HOLDOUT_REASON_TAG, ""),
            metric=tags.get(GATE_METRIC_TAG, ""),
            margin=margin,
            champion_scores=_scores(tags, CHAMPION_SCORE_PREFIX),
        )


@dataclass(frozen=True)
class VersionRecord:
    """A model version as the registry records it; None / empty fields are not (yet) recorded."""

    evaluation: str | None = None  # PASSED or FAILED
    holdout_scores: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    cost_matrix_json: str | None = None  # as tagged: read under the profile of the reader (`cost_matrix`)
    gate: GateRecord | None = None
    shadow_reason: str | None = None
    promoted_at: str | None = None
    promotion_reason: str | None = None
    demoted_at: str | None = None
    rolled_back_at: str | None = None

    def to_tags(self) -> dict[str, str]:
        """The tags of the recorded fields, in the formats every version of mfd wrote."""
        texts = {
            EVALUATION_TAG: self.evaluation,
            SHADOW_VERDICT_TAG: self.shadow_reason and self.shadow_reason[:TEXT_LIMIT],
            PROMOTED_AT_TAG: self.promoted_at,
            PROMOTION_REASON_TAG: self.promotion_reason and self.promotion_reason[:TEXT_LIMIT],
            DEMOTED_AT_TAG: self.demoted_at,
            ROLLED_BACK_AT_TAG: self.rolled_back_at,
        }
        tags = {key: value for key, value in texts.items() if value is not None}
        tags |= _scores_tags(self.holdout_scores, HOLDOUT_PREFIX)
        if self.thresholds:
            tags[THRESHOLDS_TAG] = thresholds_json(self.thresholds)
        if self.cost_matrix_json is not None:
            tags[COST_MATRIX_TAG] = self.cost_matrix_json
        return tags | (self.gate.to_tags() if self.gate is not None else {})

    @classmethod
    def with_policy(cls, thresholds: Mapping[str, float], matrix: CostMatrix) -> VersionRecord:
        """The decision policy a version is registered with: thresholds per machine type, cost matrix."""
        return cls(thresholds=dict(thresholds), cost_matrix_json=matrix_json(matrix))

    @property
    def cost_matrix(self) -> CostMatrix | None:
        """The tagged cost matrix (None: none tagged); MfdError when it does not fit the active profile."""
        return parse_cost_matrix(self.cost_matrix_json) if self.cost_matrix_json else None

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> VersionRecord:
        """The record in a version's tags (other tags, e.g. the model's own, are ignored); never raises."""
        return cls(
            evaluation=tags.get(EVALUATION_TAG),
            holdout_scores=_scores(tags, HOLDOUT_PREFIX),
            thresholds=parse_thresholds(tags.get(THRESHOLDS_TAG)),
            cost_matrix_json=tags.get(COST_MATRIX_TAG) or None,
            gate=GateRecord.from_tags(tags),
            shadow_reason=tags.get(SHADOW_VERDICT_TAG),
            promoted_at=tags.get(PROMOTED_AT_TAG),
            promotion_reason=tags.get(PROMOTION_REASON_TAG),
            demoted_at=tags.get(DEMOTED_AT_TAG),
            rolled_back_at=tags.get(ROLLED_BACK_AT_TAG),
        )


@dataclass(frozen=True)
class ChampionRecord:
    """The registered model's record: versions that were champion (oldest first) and the current one."""

    history: tuple[str, ...] = ()
    version: str | None = None

    def to_tags(self) -> dict[str, str]:
        tags = {HISTORY_TAG: ",".join(self.history[-HISTORY_LIMIT:])}
        return tags | ({CHAMPION_TAG: self.version} if self.version is not None else {})

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> ChampionRecord:
        history = tuple(v for v in tags.get(HISTORY_TAG, "").split(",") if v)
        return cls(history, tags.get(CHAMPION_TAG))

    def promoted(self, version: str) -> ChampionRecord:
        """`version` as the new champion, last in the history (once)."""
        return ChampionRecord((*(v for v in self.history if v != version), version), version)
