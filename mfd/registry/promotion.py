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

from dataclasses import dataclass, field
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
    matrix_json,
    parse_cost_matrix,
    parse_thresholds,
    threshold_array,
    thresholds_by_type,
    thresholds_json,
)
from mfd.errors import MfdError
from mfd.modeling.early_warning import figures, has_keys, lead_of, lead_verdict
from mfd.modeling.metrics import METRICS, scores
from mfd.modeling.model_io import CHALLENGER, CHAMPION, load_model_version, register_logged_model
from mfd.modeling.rul import rul_errors
from mfd.registry.model_card import CardInputs, attach_card, build_card
from mfd.registry.shadow_evidence import BLOCK, ShadowGate, ShadowVerdict, shadow_verdict
from mfd.schema import LABEL_COLUMN, PROFILE

HISTORY_TAG = "champion_history"
CHAMPION_TAG = "champion_version"
EVALUATION_TAG = "evaluation"
HISTORY_LIMIT = 50
THRESHOLDS_TAG = "thresholds"
COST_MATRIX_TAG = "cost_matrix"
EXPECTED_COST = "expected_cost"
PROMOTION_METRICS: tuple[str, ...] = (*METRICS, EXPECTED_COST)
# The gate's record on a version (what `promote_challenger` decides on once the version has shadowed).
GATE_CHAMPION_TAG = "gate_champion"
HOLDOUT_VERDICT_TAG = "gate_holdout_verdict"
HOLDOUT_REASON_TAG = "gate_holdout_reason"
GATE_METRIC_TAG = "gate_metric"
GATE_MARGIN_TAG = "gate_margin"
CHAMPION_SCORE_PREFIX = "gate_champion_score_"
SHADOW_VERDICT_TAG = "gate_shadow_verdict"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _exists(client: MlflowClient, name: str, version: str) -> bool:
    try:
        client.get_model_version(name, version)
    except MlflowException:
        return False
    return True


def _registered_tags(client: MlflowClient, name: str) -> dict[str, str]:
    try:
        return dict(client.get_registered_model(name).tags)
    except MlflowException:
        return {}


def history(client: MlflowClient, name: str) -> list[str]:
    """Versions that were champion, oldest first (the current champion last)."""
    raw = _registered_tags(client, name).get(HISTORY_TAG, "")
    return [v for v in raw.split(",") if v]


@dataclass(frozen=True)
class ChampionStatus:
    """Where `champion` points; `problem` says why there is no usable champion when the record has one."""

    version: str | None
    recorded: str | None
    problem: str | None = None


def champion_status(client: MlflowClient, name: str) -> ChampionStatus:
    """The champion version, checked against the recorded one; detects an alias whose version is gone."""
    recorded = _registered_tags(client, name).get(CHAMPION_TAG)
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
    thresholds = parse_thresholds(client.get_model_version(name, version).tags.get(THRESHOLDS_TAG))
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
    """The holdout verdict: the `metric` margin, and, where machines run to failure, lead time no worse
    (`lead_verdict`). Snapshot data (AI4I) reports its lead-time figures but its gate stays the metric: its
    labels sit on the failing reading, so no model can warn ahead of it."""
    on_metric = _verdict(metric, margin, challenger, champion)
    if not PROFILE.run_to_failure:
        return on_metric
    on_lead = lead_verdict(challenger, champion)
    if not on_lead[0]:
        return False, f"{on_lead[1]}; {on_metric[1]}"
    return on_metric[0], f"{on_metric[1]}; {on_lead[1]}"


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
    client.set_model_version_tag(name, version, "promoted_at", _now())
    client.set_model_version_tag(name, version, "promotion_reason", reason[:4000])
    if previous is not None and _exists(client, name, previous):
        client.set_model_version_tag(name, previous, "demoted_at", _now())
    past = [v for v in history(client, name) if v != version] + [version]
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(past[-HISTORY_LIMIT:]))
    client.set_registered_model_tag(name, CHAMPION_TAG, version)


def _verdict(
    metric: str, margin: float, challenger: dict[str, float], champion: dict[str, float]
) -> tuple[bool, str]:
    # expected cost: lower is better
    gain = (
        champion[metric] - challenger[metric]
        if metric == EXPECTED_COST
        else challenger[metric] - champion[metric]
    )
    figures = (
        f"{metric} {challenger[metric]:.4f} vs {champion[metric]:.4f} (gain {gain:+.4f}, margin {margin})"
    )
    if gain > 0 and gain >= margin:
        return True, f"challenger beats the champion: {figures}"
    return False, f"champion kept: challenger not better by the margin: {figures}"


def _with_shadow(
    holdout_ok: bool,
    holdout_reason: str,
    verdict: ShadowVerdict | None,
    gate: ShadowGate | None,
    version: str,
) -> tuple[bool, str]:
    """The holdout verdict combined with the shadow verdict of `gate` (None: the holdout alone)."""
    if verdict is None or gate is None:
        return holdout_ok, holdout_reason
    if not holdout_ok:
        return False, f"{holdout_reason}; {verdict.reason}"
    if verdict.sufficient:
        if verdict.passed:
            return True, f"{holdout_reason}; {verdict.reason}"
        return False, f"champion kept: {verdict.reason} (holdout: {holdout_reason})"
    if gate.on_insufficient == BLOCK:
        return False, (
            f"champion kept: {verdict.reason}; version {version} stays challenger and shadows "
            f"(holdout: {holdout_reason})"
        )
    return True, f"{holdout_reason} ({verdict.reason}: the holdout alone decides)"


def _record_gate(
    client: MlflowClient,
    name: str,
    version: str,
    champion: str,
    holdout: tuple[bool, str],
    champion_scores: dict[str, float],
    verdict: ShadowVerdict | None,
    metric: str,
    margin: float,
) -> None:
    """The holdout verdict against `champion` (and its scores) and the shadow verdict as version tags:
    what `promote_challenger` decides on later."""
    client.set_model_version_tag(name, version, GATE_CHAMPION_TAG, champion)
    client.set_model_version_tag(name, version, GATE_METRIC_TAG, metric)
    client.set_model_version_tag(name, version, GATE_MARGIN_TAG, str(margin))
    client.set_model_version_tag(name, version, HOLDOUT_VERDICT_TAG, "passed" if holdout[0] else "failed")
    client.set_model_version_tag(name, version, HOLDOUT_REASON_TAG, holdout[1][:4000])
    for key, value in champion_scores.items():
        client.set_model_version_tag(name, version, f"{CHAMPION_SCORE_PREFIX}{key}", f"{value:.6f}")
    if verdict is not None:
        client.set_model_version_tag(name, version, SHADOW_VERDICT_TAG, verdict.reason[:4000])


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
) -> Decision:
    """Register `model_uri` as a new version, evaluate it and the champion on the same `holdout`, and move
    `champion` only when the challenger wins on `metric` by at least `margin` and, with `lead_holdout`
    (holdout readings with machine and time), warns no later and no more falsely (`lead_verdict`) (and, with
    `shadow_gate`, its shadow evidence in `engine` passes or, too little of it, the gate falls back to the
    holdout).

    `validation` (out-of-fold predictions: `y`, `proba`, `machine_type`) gives the version its cost-optimal
    threshold per machine type under `cost_matrix` (None: the default matrix). Every version gets a model
    card; one whose evaluation fails is tagged `evaluation=failed` and gets no alias.
    """
    if metric not in PROMOTION_METRICS:
        raise MfdError(f"unknown promotion metric {metric!r}; choose one of {', '.join(PROMOTION_METRICS)}")
    if shadow_gate is not None and engine is None:
        raise MfdError("the shadow gate needs the readings database (engine) its shadow predictions are in")
    matrix = cost_matrix if cost_matrix is not None else parse_cost_matrix(None)
    choices: dict[str, ThresholdChoice] = (
        thresholds_by_type(validation, matrix) if validation is not None and len(validation) else {}
    )
    version_tags = {**(tags or {}), COST_MATRIX_TAG: matrix_json(matrix)}
    if choices:
        version_tags[THRESHOLDS_TAG] = thresholds_json(choices)
    mv: ModelVersion = register_logged_model(model_uri, name, threshold=threshold, tags=version_tags)
    version = str(mv.version)
    try:
        evaluation = _evaluate(client, name, version, holdout, matrix, lead_holdout)
    except Exception as exc:
        client.set_model_version_tag(name, version, EVALUATION_TAG, "failed")
        attach_card(
            client,
            name,
            version,
            mv.run_id,
            f"# Model card: {name} version {version}\n\nEvaluation on the "
            f"holdout failed ({type(exc).__name__}: {exc}); this version gets no alias.\n",
        )
        raise
    challenger_scores = evaluation.scores
    client.set_model_version_tag(name, version, EVALUATION_TAG, "passed")
    for key, value in challenger_scores.items():
        client.set_model_version_tag(name, version, f"holdout_{key}", f"{value:.6f}")
    client.set_registered_model_alias(name, CHALLENGER, version)

    status = champion_status(client, name)
    champion_scores = None
    verdict = None
    if status.version is None:
        promoted = True
        reason = f"first champion ({status.problem})" if status.problem else "first champion: none existed"
        _set_champion(client, name, version, None, reason)
    else:
        champion_scores = _evaluate(client, name, status.version, holdout, matrix, lead_holdout).scores
        on_holdout = _gate(metric, margin, challenger_scores, champion_scores)
        if shadow_gate is not None and engine is not None:
            verdict = shadow_verdict(engine, version, shadow_gate)
        _record_gate(
            client, name, version, status.version, on_holdout, champion_scores, verdict, metric, margin
        )
        promoted, reason = _with_shadow(*on_holdout, verdict, shadow_gate, version)
        if promoted:
            _set_champion(client, name, version, status.version, reason)
    inputs = CardInputs(
        name=name,
        version=version,
        holdout=holdout,
        proba=evaluation.proba,
        threshold=evaluation.threshold,
        thresholds=evaluation.thresholds,
        choices=choices,
        cost_matrix=matrix,
        decision=reason,
        early_warning=challenger_scores,
    )
    card = build_card(inputs, client, mv.run_id)
    attach_card(client, name, version, mv.run_id, card)
    return Decision(
        promoted,
        version,
        status.version,
        version if promoted else status.version,
        metric,
        margin,
        challenger_scores,
        champion_scores,
        reason,
        thresholds=evaluation.thresholds,
        card=card,
        shadow=verdict,
    )


def _scores(tags: dict[str, str], prefix: str) -> dict[str, float]:
    """The numeric tags starting with `prefix`, without it (e.g. `holdout_pr_auc` -> `pr_auc`)."""
    out = {}
    for key, value in tags.items():
        if key.startswith(prefix):
            try:
                out[key[len(prefix) :]] = float(value)
            except ValueError:
                continue
    return out


def recorded_holdout(
    client: MlflowClient, name: str, challenger: str, champion: str
) -> tuple[pd.DataFrame, str]:
    """The holdout scores recorded for the challenger and the champion (one row each), and which holdout:
    the challenger's gate record when it was compared with this champion (one holdout for both), else each
    version's own registration holdout."""
    tags = dict(client.get_model_version(name, challenger).tags)
    if tags.get(GATE_CHAMPION_TAG) == champion:
        theirs, note = (
            _scores(tags, CHAMPION_SCORE_PREFIX),
            "the challenger's, both scored at its registration",
        )
    else:
        theirs = _scores(dict(client.get_model_version(name, champion).tags), "holdout_")
        note = "each version's own, at its registration"
    rows = [_scores(tags, "holdout_"), theirs]
    return pd.DataFrame(rows, index=[f"challenger v{challenger}", f"champion v{champion}"]), note


def awaiting_shadow_verdict(client: MlflowClient, name: str) -> str | None:
    """The `challenger` version a shadow verdict can still promote: not the champion, and it passed the
    holdout against today's champion (`promote_challenger` keeps the champion for any other); else None."""
    try:
        version = str(client.get_model_version_by_alias(name, CHALLENGER).version)
        champion = str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None
    tags = client.get_model_version(name, version).tags
    passed = tags.get(HOLDOUT_VERDICT_TAG) == "passed" and tags.get(GATE_CHAMPION_TAG) == champion
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
    tags = dict(client.get_model_version(name, version).tags)
    compared_with = tags.get(GATE_CHAMPION_TAG)
    verdict = shadow_verdict(engine, version, gate)
    client.set_model_version_tag(name, version, SHADOW_VERDICT_TAG, verdict.reason[:4000])
    if compared_with is None:
        promoted, reason = (
            False,
            (f"champion kept: version {version} has no recorded holdout verdict against a champion"),
        )
    elif compared_with != status.version:
        promoted, reason = (
            False,
            (
                f"champion kept: version {version} was compared on the holdout with version {compared_with}, "
                f"the champion is now version {status.version}: retrain to compare again"
            ),
        )
    else:
        holdout_ok = tags.get(HOLDOUT_VERDICT_TAG) == "passed"
        promoted, reason = _with_shadow(holdout_ok, tags.get(HOLDOUT_REASON_TAG, ""), verdict, gate, version)
    if promoted:
        _set_champion(client, name, version, status.version, reason)
    return Decision(
        promoted,
        version,
        status.version,
        version if promoted else status.version,
        tags.get(GATE_METRIC_TAG, ""),
        float(tags.get(GATE_MARGIN_TAG, "nan")),
        _scores(tags, "holdout_"),
        _scores(tags, CHAMPION_SCORE_PREFIX),
        reason,
        thresholds=parse_thresholds(tags.get(THRESHOLDS_TAG)),
        shadow=verdict,
    )


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
    client.set_registered_model_tag(name, HISTORY_TAG, ",".join(past))
    client.set_registered_model_tag(name, CHAMPION_TAG, target)
    client.set_model_version_tag(name, target, "promoted_at", _now())
    client.set_model_version_tag(name, target, "promotion_reason", f"rollback from version {current.version}")
    if current.version is not None:
        client.set_model_version_tag(name, current.version, "rolled_back_at", _now())
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
                "pr_auc": tags.get("holdout_pr_auc", ""),
                "roc_auc": tags.get("holdout_roc_auc", ""),
                "threshold": tags.get("threshold", ""),
                "promoted_at": tags.get("promoted_at", ""),
                "demoted_at": tags.get("demoted_at", ""),
                "rolled_back_at": tags.get("rolled_back_at", ""),
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
