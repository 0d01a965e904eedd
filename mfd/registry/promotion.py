"""The champion in the MLflow model registry: gated promotion of a challenger, rollback, and its history.

Aliases: `challenger` marks the newest version that passed evaluation; `champion` the version to serve.
A registered version gets an alias only after a successful evaluation on the holdout. The history lives
in registry tags: the registered model's `champion_history` (versions, oldest first) and `champion_version`,
and on each version `promoted_at` / `promotion_reason` / `demoted_at` / `rolled_back_at` / `holdout_*`.

With validation predictions and a cost matrix, each version is also tagged with its cost-optimal
`thresholds` per machine type and its `cost_matrix` (what detection and serving decide with), the gate may
compare on `expected_cost` (per holdout reading, lower wins), and every version gets a model card.

With a `ShadowGate` the gate also reads the live shadow evidence of the version (`shadow_evidence`): a
holdout win is not enough while the evidence is against the challenger, and too little of it either blocks
the promotion (the version stays `challenger` and shadows; `promote_challenger` decides later) or leaves
the decision to the holdout. Each version records its holdout verdict (`gate_holdout_verdict` against
`gate_champion`, whose scores are `gate_champion_score_*`) and the shadow verdict (`gate_shadow_verdict`).

Early warning: given the holdout's readings with their machine and time (`lead_holdout`), every version is
also scored on lead time (`lead_*`: share of failures warned at least the profile's lead ahead, median lead,
false alarms per machine-day, precision per alarm, at its operating threshold) and, with a RUL head, on
remaining useful life (`rul_rmse_hours`). Where machines run to failure, a challenger that warns a smaller
share of failures than the champion, or raises more false alarms per machine-day, is refused whatever its
`metric` (`lead_verdict`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.engine import Engine

from mfd.alerts.costs import (
    CostMatrix,
    ThresholdChoice,
    decision_cost,
    parse_cost_matrix,
    threshold_array,
    thresholds_by_type,
)
from mfd.errors import MfdError
from mfd.modeling.early_warning import figures, has_keys, lead_of
from mfd.modeling.early_warning import lead_verdict as lead_verdict
from mfd.modeling.experiment import LoggedCandidate
from mfd.modeling.metrics import METRICS, scores
from mfd.modeling.model_io import (
    CHALLENGER,
    CHAMPION,
    THRESHOLD_TAG,
    load_model_version,
    register_logged_model,
)
from mfd.modeling.rul import rul_errors
from mfd.registry.gate import EXPECTED_COST, Outcome, Rule, decide, decide_shadowed, holdout_verdict
from mfd.registry.model_card import CardInputs, attach_card, build_card
from mfd.registry.shadow_evidence import ShadowGate, ShadowVerdict, shadow_verdict
from mfd.registry.tags import CHAMPION_SCORE_PREFIX as CHAMPION_SCORE_PREFIX
from mfd.registry.tags import COST_MATRIX_TAG as COST_MATRIX_TAG
from mfd.registry.tags import (
    DEMOTED_AT_TAG,
    EVALUATION_TAG,
    FAILED,
    HOLDOUT_PREFIX,
    PASSED,
    PROMOTED_AT_TAG,
    ROLLED_BACK_AT_TAG,
    ChampionRecord,
    GateRecord,
    VersionRecord,
)
from mfd.registry.tags import SHADOW_VERDICT_TAG as SHADOW_VERDICT_TAG
from mfd.registry.tags import THRESHOLDS_TAG as THRESHOLDS_TAG
from mfd.schema import LABEL_COLUMN, PROFILE

# Imported `as` themselves: re-exported for callers and tests (the tag names are spelled in `tags`).
PROMOTION_METRICS: tuple[str, ...] = (*METRICS, EXPECTED_COST)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


def _champion_record(client: MlflowClient, name: str) -> ChampionRecord:
    try:
        return ChampionRecord.from_tags(client.get_registered_model(name).tags)
    except MlflowException:
        return ChampionRecord()


def _version_record(client: MlflowClient, name: str, version: str) -> VersionRecord:
    return VersionRecord.from_tags(client.get_model_version(name, version).tags)


def _record(client: MlflowClient, name: str, version: str, record: VersionRecord) -> None:
    """Write the recorded fields of `record` as tags of `version`."""
    for key, value in record.to_tags().items():
        client.set_model_version_tag(name, version, key, value)


def _record_champion(client: MlflowClient, name: str, record: ChampionRecord) -> None:
    for key, value in record.to_tags().items():
        client.set_registered_model_tag(name, key, value)


def history(client: MlflowClient, name: str) -> list[str]:
    """Versions that were champion, oldest first (the current champion last)."""
    return list(_champion_record(client, name).history)


@dataclass(frozen=True)
class ChampionStatus:
    """Where `champion` points; `problem` says why there is no usable champion when the record has one."""

    version: str | None
    recorded: str | None
    problem: str | None = None


def champion_status(client: MlflowClient, name: str) -> ChampionStatus:
    """The champion version, checked against the recorded one; detects an alias whose version is gone."""
    recorded = _champion_record(client, name).version
    try:
        version = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        version = None
    if version is not None and not _exists(client, name, version):
        return ChampionStatus(
            None, recorded, f"alias `{CHAMPION}` points at version {version}, which was deleted"
        )
    if version is None and recorded is not None:
        if not _exists(client, name, recorded):
            problem = f"the recorded champion, version {recorded}, was deleted (its `{CHAMPION}` alias went with it)"
        else:
            problem = f"alias `{CHAMPION}` is missing; the recorded champion is version {recorded}"
        return ChampionStatus(None, recorded, problem)
    return ChampionStatus(version, recorded)


@dataclass(frozen=True)
class Evaluation:
    """A version scored on the holdout: its scores, probabilities and the thresholds it decides with."""

    scores: dict[str, float]
    proba: np.ndarray
    threshold: float
    thresholds: dict[str, float]


def _evaluate(
    client: MlflowClient,
    name: str,
    version: str,
    holdout: pd.DataFrame,
    matrix: CostMatrix | None,
    lead_holdout: pd.DataFrame | None = None,
) -> Evaluation:
    model = load_model_version(client, name, version)
    thresholds = _version_record(client, name, version).thresholds
    y = holdout[LABEL_COLUMN].astype("int64").to_numpy()
    proba = model.probability(holdout)
    result = scores(y, proba, model.threshold)
    if matrix is not None:
        types = holdout["machine_type"].astype(str).to_numpy()
        alarm = proba >= threshold_array(types, thresholds, model.threshold)
        result[EXPECTED_COST] = decision_cost(y, alarm, types, matrix) / max(len(y), 1)
    if lead_holdout is not None and len(lead_holdout) and has_keys(lead_holdout):
        result |= figures(lead_of(lead_holdout, model.probability(lead_holdout), model.threshold))
        estimate = model.estimate_rul(lead_holdout)
        if estimate is not None:
            result |= rul_errors(lead_holdout, estimate)
    return Evaluation(result, proba, model.threshold, thresholds)


def _gate(
    metric: str, margin: float, challenger: dict[str, float], champion: dict[str, float]
) -> tuple[bool, str]:
    """The holdout verdict under the active profile (`gate.holdout_verdict`)."""
    return holdout_verdict(Rule(metric, margin, PROFILE.run_to_failure), challenger, champion)


def evaluate_version(
    client: MlflowClient,
    name: str,
    version: str,
    holdout: pd.DataFrame,
    cost_matrix: CostMatrix | None = None,
) -> dict[str, float]:
    """Scores of the registered `version`, loaded through mlflow.pyfunc, on labelled `holdout` rows; with a
    cost matrix also `expected_cost` per reading at the version's thresholds per machine type."""
    return _evaluate(client, name, version, holdout, cost_matrix).scores


@dataclass(frozen=True)
class Decision:
    """The outcome of a promotion attempt, with the scores it was based on."""

    promoted: bool
    challenger: str
    champion_before: str | None
    champion_after: str | None
    metric: str
    margin: float
    challenger_scores: dict[str, float]
    champion_scores: dict[str, float] | None
    reason: str
    thresholds: dict[str, float] = field(default_factory=dict)
    card: str = ""
    shadow: ShadowVerdict | None = None

    @classmethod
    def of(
        cls,
        version: str,
        before: str | None,
        outcome: Outcome,
        record: VersionRecord,
        rule: Rule,
        card: str = "",
    ) -> Decision:
        """The decision on `version` (champion `before`) from the gate's `outcome` and the version's
        `record`; `rule` gives metric and margin where the record has no gate (no champion to compare)."""
        gate = record.gate
        return cls(
            promoted=outcome.promoted,
            challenger=version,
            champion_before=before,
            champion_after=version if outcome.promoted else before,
            metric=gate.metric if gate is not None else rule.metric,
            margin=gate.margin if gate is not None else rule.margin,
            challenger_scores=record.holdout_scores,
            champion_scores=gate.champion_scores if gate is not None else None,
            reason=outcome.reason,
            thresholds=record.thresholds,
            card=card,
            shadow=outcome.shadow,
        )

    def table(self) -> pd.DataFrame:
        """Challenger vs champion scores on the shared holdout, one row per model; with a shadow gate also
        their shadow evidence (`shadow_*` columns)."""
        rows = {f"challenger v{self.challenger}": self.challenger_scores}
        if self.champion_scores is not None:
            rows[f"champion v{self.champion_before}"] = self.champion_scores
        table = pd.DataFrame.from_dict(rows, orient="index")
        if self.shadow is None:
            return table
        evidence = self.shadow.evidence.add_prefix("shadow_")
        roles = {
            "challenger": f"challenger v{self.challenger}",
            "champion": f"champion v{self.champion_before}",
        }
        evidence.index = [roles[str(i).split(" ")[0]] for i in evidence.index]
        return table.join(evidence, how="outer")


def _set_champion(client: MlflowClient, name: str, version: str, previous: str | None, reason: str) -> None:
    client.set_registered_model_alias(name, CHAMPION, version)
    _record(client, name, version, VersionRecord(promoted_at=_now(), promotion_reason=reason))
    if previous is not None and _exists(client, name, previous):
        _record(client, name, previous, VersionRecord(demoted_at=_now()))
    _record_champion(client, name, _champion_record(client, name).promoted(version))


@dataclass(frozen=True)
class _Registered:
    """A version just registered, with the cost matrix and threshold choices it was tagged with."""

    version: ModelVersion
    matrix: CostMatrix
    choices: dict[str, ThresholdChoice]


def _register(
    model_uri: str,
    name: str,
    threshold: float,
    tags: dict[str, str] | None,
    validation: pd.DataFrame | None,
    cost_matrix: CostMatrix | None,
) -> _Registered:
    """Register `model_uri` tagged with its cost matrix and the thresholds per machine type its
    `validation` predictions give under it."""
    matrix = cost_matrix if cost_matrix is not None else parse_cost_matrix(None)
    choices: dict[str, ThresholdChoice] = (
        thresholds_by_type(validation, matrix) if validation is not None and len(validation) else {}
    )
    policy = VersionRecord.with_policy({t: c.threshold for t, c in choices.items()}, matrix)
    mv = register_logged_model(
        model_uri, name, threshold=threshold, tags={**(tags or {}), **policy.to_tags()}
    )
    return _Registered(mv, matrix, choices)


def _evaluate_new(
    client: MlflowClient,
    name: str,
    registered: _Registered,
    holdout: pd.DataFrame,
    lead_holdout: pd.DataFrame | None,
) -> Evaluation:
    """Evaluate the new version and record it (`challenger` alias); a failed evaluation is recorded with a
    card saying so, and raises."""
    version, run_id = str(registered.version.version), registered.version.run_id
    try:
        evaluation = _evaluate(client, name, version, holdout, registered.matrix, lead_holdout)
    except Exception as exc:
        _record(client, name, version, VersionRecord(evaluation=FAILED))
        attach_card(
            client,
            name,
            version,
            run_id,
            f"# Model card: {name} version {version}\n\nEvaluation on the "
            f"holdout failed ({type(exc).__name__}: {exc}); this version gets no alias.\n",
        )
        raise
    _record(client, name, version, VersionRecord(evaluation=PASSED, holdout_scores=evaluation.scores))
    client.set_registered_model_alias(name, CHALLENGER, version)
    return evaluation


def promote_candidate(
    client: MlflowClient,
    name: str,
    model_uri: str,
    holdout: pd.DataFrame,
    *,
    threshold: float,
    metric: str = "pr_auc",
    margin: float = 0.005,
    tags: dict[str, str] | None = None,
    validation: pd.DataFrame | None = None,
    cost_matrix: CostMatrix | None = None,
    shadow_gate: ShadowGate | None = None,
    engine: Engine | None = None,
    lead_holdout: pd.DataFrame | None = None,
    keep_champion: str | None = None,
) -> Decision:
    """Register `model_uri` as a new version, evaluate it and the champion on the same `holdout`, and move
    `champion` only when the challenger wins on `metric` by at least `margin` and, with `lead_holdout`
    (holdout readings with machine and time), warns no later and no more falsely (`lead_verdict`) (and, with
    `shadow_gate`, its shadow evidence in `engine` passes or, too little of it, the gate falls back to the
    holdout). `keep_champion`, a reason (e.g. a worse replay), keeps an existing champion whatever the
    holdout says; the version is still registered, evaluated and recorded as failing the gate.

    `validation` (out-of-fold predictions: `y`, `proba`, `machine_type`) gives the version its cost-optimal
    threshold per machine type under `cost_matrix` (None: the default matrix). Every version gets a model
    card; one whose evaluation fails is tagged `evaluation=failed` and gets no alias.
    """
    if metric not in PROMOTION_METRICS:
        raise MfdError(f"unknown promotion metric {metric!r}; choose one of {', '.join(PROMOTION_METRICS)}")
    if shadow_gate is not None and engine is None:
        raise MfdError("the shadow gate needs the readings database (engine) its shadow predictions are in")
    registered = _register(model_uri, name, threshold, tags, validation, cost_matrix)
    version = str(registered.version.version)
    evaluation = _evaluate_new(client, name, registered, holdout, lead_holdout)
    rule = Rule(metric, margin, PROFILE.run_to_failure)
    status = champion_status(client, name)
    record = VersionRecord(holdout_scores=evaluation.scores, thresholds=evaluation.thresholds)
    if status.version is None:
        outcome = decide(version, evaluation.scores, None, rule, problem=status.problem)
    else:
        champion = _evaluate(client, name, status.version, holdout, registered.matrix, lead_holdout).scores
        verdict = None
        if shadow_gate is not None and engine is not None:
            verdict = shadow_verdict(engine, version, shadow_gate)
        outcome = decide(
            version,
            evaluation.scores,
            champion,
            rule,
            keep_champion=keep_champion,
            shadow=verdict,
            gate=shadow_gate,
        )
        passed, reason = outcome.holdout
        gate = GateRecord(status.version, passed, reason, metric, margin, champion_scores=champion)
        _record(client, name, version, VersionRecord(gate=gate, shadow_reason=verdict and verdict.reason))
        record = replace(record, gate=gate)
    if outcome.promoted:
        _set_champion(client, name, version, status.version, outcome.reason)
    card = _card(client, name, registered, holdout, evaluation, outcome.reason)
    return Decision.of(version, status.version, outcome, record, rule, card)


def _card(
    client: MlflowClient,
    name: str,
    registered: _Registered,
    holdout: pd.DataFrame,
    evaluation: Evaluation,
    decision: str,
) -> str:
    """The new version's model card, attached to it; returned."""
    version, run_id = str(registered.version.version), registered.version.run_id
    inputs = CardInputs(
        name=name,
        version=version,
        holdout=holdout,
        proba=evaluation.proba,
        threshold=evaluation.threshold,
        thresholds=evaluation.thresholds,
        choices=registered.choices,
        cost_matrix=registered.matrix,
        decision=decision,
        early_warning=evaluation.scores,
    )
    card = build_card(inputs, client, run_id)
    attach_card(client, name, version, run_id, card)
    return card


def promote_logged(
    client: MlflowClient,
    name: str,
    logged: LoggedCandidate,
    *,
    metric: str = "pr_auc",
    margin: float = 0.005,
    tags: dict[str, str] | None = None,
    cost_matrix: CostMatrix | None = None,
    shadow_gate: ShadowGate | None = None,
    engine: Engine | None = None,
    keep_champion: str | None = None,
) -> Decision:
    """THE way a trained candidate is promoted (`mfd train --register`, the `champion_model` asset):
    `promote_candidate` on the candidate's gate holdout (the holdout, + its noisy copy under the robust
    objective), with thresholds per machine type from its validation folds, lead time and RUL on the clean
    holdout, and the MLflow run recorded on the version (`mlflow_run_id`, besides `tags`)."""
    candidate = logged.candidate
    return promote_candidate(
        client,
        name,
        logged.model_uri,
        candidate.gate_holdout,
        threshold=candidate.threshold,
        metric=metric,
        margin=margin,
        tags={"mlflow_run_id": logged.run_id, **(tags or {})},
        # candidates pickled before validation folds existed have none
        validation=getattr(candidate, "validation", None),
        cost_matrix=cost_matrix,
        shadow_gate=shadow_gate,
        engine=engine,
        lead_holdout=getattr(candidate, "holdout", None),
        keep_champion=keep_champion,
    )


def recorded_holdout(
    client: MlflowClient, name: str, challenger: str, champion: str
) -> tuple[pd.DataFrame, str]:
    """The holdout scores recorded for the challenger and the champion (one row each), and which holdout:
    the challenger's gate record when it was compared with this champion (one holdout for both), else each
    version's own registration holdout."""
    record = _version_record(client, name, challenger)
    if record.gate is not None and record.gate.champion == champion:
        theirs, note = record.gate.champion_scores, "the challenger's, both scored at its registration"
    else:
        theirs = _version_record(client, name, champion).holdout_scores
        note = "each version's own, at its registration"
    rows = [record.holdout_scores, theirs]
    return pd.DataFrame(rows, index=[f"challenger v{challenger}", f"champion v{champion}"]), note


def awaiting_shadow_verdict(client: MlflowClient, name: str) -> str | None:
    """The `challenger` version a shadow verdict can still promote: not the champion, and it passed the
    holdout against today's champion (`promote_challenger` keeps the champion for any other); else None."""
    try:
        version = str(client.get_model_version_by_alias(name, CHALLENGER).version)
        champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None
    gate = _version_record(client, name, version).gate
    passed = gate is not None and gate.passed and gate.champion == champion
    return version if version != champion and passed else None


def promote_challenger(client: MlflowClient, name: str, engine: Engine, gate: ShadowGate) -> Decision:
    """Decide on the version under `challenger` now that it has shadowed: its recorded holdout verdict
    against the champion (`promote_candidate`) combined with the shadow evidence stored in `engine`.

    The champion stays when the challenger never won on the holdout, was compared with another champion
    than today's (retrain to compare again), or its shadow evidence is against it or too little (`block`).
    """
    try:
        version = str(client.get_model_version_by_alias(name, CHALLENGER).version)
    except MlflowException as exc:
        raise MfdError(f"{name!r} has no `{CHALLENGER}` version to promote") from exc
    status = champion_status(client, name)
    if status.version is None:
        raise MfdError(f"{name!r} has no usable champion to compare with: {status.problem or 'none yet'}")
    if version == status.version:
        raise MfdError(f"the challenger of {name!r}, version {version}, already is the champion")
    record = _version_record(client, name, version)
    verdict = shadow_verdict(engine, version, gate)
    _record(client, name, version, VersionRecord(shadow_reason=verdict.reason))
    outcome = decide_shadowed(version, status.version, record.gate, verdict, gate)
    if outcome.promoted:
        _set_champion(client, name, version, status.version, outcome.reason)
    return Decision.of(version, status.version, outcome, record, Rule("", math.nan))


@dataclass(frozen=True)
class Rollback:
    from_version: str | None
    to_version: str
    skipped: tuple[str, ...]


def rollback(client: MlflowClient, name: str) -> Rollback:
    """Move `champion` back to the previous champion still in the registry (deleted ones are skipped)."""
    past = history(client, name)
    current = champion_status(client, name)
    if current.version is not None and past and past[-1] == current.version:
        past = past[:-1]
    elif current.version is None and current.recorded and past and past[-1] == current.recorded:
        past = past[:-1]
    skipped = []
    while past and not _exists(client, name, past[-1]):
        skipped.append(past.pop())
    if not past:
        raise MfdError(
            f"no previous champion of {name!r} to roll back to"
            + (f" (deleted: {', '.join(skipped)})" if skipped else "")
        )
    target = past[-1]
    client.set_registered_model_alias(name, CHAMPION, target)
    _record_champion(client, name, ChampionRecord(tuple(past), target))
    reason = f"rollback from version {current.version}"
    _record(client, name, target, VersionRecord(promoted_at=_now(), promotion_reason=reason))
    if current.version is not None:
        _record(client, name, current.version, VersionRecord(rolled_back_at=_now()))
    return Rollback(current.version, target, tuple(skipped))


def describe(client: MlflowClient, name: str) -> pd.DataFrame:
    """Every version of `name`: aliases, evaluation, holdout scores and promotion tags, newest first."""
    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as exc:
        raise MfdError(
            f"no registered model {name!r} in the registry; train with `mfd train --register`"
        ) from exc
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    rows = []
    for mv in client.search_model_versions(f"name='{name}'"):
        tags = mv.tags
        rows.append(
            {
                "version": int(mv.version),
                "aliases": ",".join(sorted(by_version.get(str(mv.version), []))),
                "evaluation": tags.get(EVALUATION_TAG, ""),
                "pr_auc": tags.get(f"{HOLDOUT_PREFIX}pr_auc", ""),
                "roc_auc": tags.get(f"{HOLDOUT_PREFIX}roc_auc", ""),
                "threshold": tags.get(THRESHOLD_TAG, ""),
                "promoted_at": tags.get(PROMOTED_AT_TAG, ""),
                "demoted_at": tags.get(DEMOTED_AT_TAG, ""),
                "rolled_back_at": tags.get(ROLLED_BACK_AT_TAG, ""),
            }
        )
    columns = [
        "version",
        "aliases",
        "evaluation",
        "pr_auc",
        "roc_auc",
        "threshold",
        "promoted_at",
        "demoted_at",
        "rolled_back_at",
    ]
    return pd.DataFrame(rows, columns=columns).sort_values("version", ascending=False).reset_index(drop=True)
