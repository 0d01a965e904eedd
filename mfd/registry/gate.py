"""The promotion gate as pure functions: from scores, the shadow verdict and the recorded gate, whether a
version becomes champion and why. Nothing here reads or writes the registry (`promotion` does that).

`decide` judges a new version against the champion on one holdout: the `metric` margin, lead time where
machines run to failure (`lead_verdict`), an explicit `keep_champion` reason (e.g. a worse replay) that keeps the champion
whatever the holdout says, then the shadow evidence. `decide_shadowed` judges a `challenger` that has
shadowed, from the gate record written at its registration."""

from __future__ import annotations

from dataclasses import dataclass

from mfd.modeling.early_warning import lead_verdict
from mfd.registry.shadow_evidence import BLOCK, ShadowGate, ShadowVerdict
from mfd.registry.tags import GateRecord

EXPECTED_COST = "expected_cost"  # per holdout reading: lower wins


@dataclass(frozen=True)
class Rule:
    """What a challenger must win on: `metric` by at least `margin`, and lead time where machines run to
    failure (`run_to_failure`: the profile's)."""

    metric: str
    margin: float
    run_to_failure: bool = False


@dataclass(frozen=True)
class Outcome:
    """A gate's answer: promoted or not and why; `holdout` is the holdout verdict it rests on (the answer
    itself when there was nothing to compare), `shadow` the shadow verdict it was combined with."""

    promoted: bool
    reason: str
    holdout: tuple[bool, str]
    shadow: ShadowVerdict | None = None


def metric_verdict(
    metric: str, margin: float, challenger: dict[str, float], champion: dict[str, float]
) -> tuple[bool, str]:
    """Whether the challenger beats the champion on `metric` by at least `margin` (strictly better)."""
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


def holdout_verdict(rule: Rule, challenger: dict[str, float], champion: dict[str, float]) -> tuple[bool, str]:
    """The holdout verdict: the metric margin, and, where machines run to failure, lead time no worse
    (`lead_verdict`). Snapshot data (AI4I) reports its lead-time figures but its gate stays the metric: its
    labels sit on the failing reading, so no model can warn ahead of it."""
    on_metric = metric_verdict(rule.metric, rule.margin, challenger, champion)
    if not rule.run_to_failure:
        return on_metric
    on_lead = lead_verdict(challenger, champion)
    if not on_lead[0]:
        return False, f"{on_lead[1]}; {on_metric[1]}"
    return on_metric[0], f"{on_metric[1]}; {on_lead[1]}"


def with_shadow(
    holdout: tuple[bool, str], verdict: ShadowVerdict | None, gate: ShadowGate | None, version: str
) -> tuple[bool, str]:
    """The holdout verdict combined with the shadow verdict of `gate` (None: the holdout alone)."""
    holdout_ok, holdout_reason = holdout
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


def decide(
    version: str,
    challenger: dict[str, float],
    champion: dict[str, float] | None,
    rule: Rule,
    *,
    problem: str | None = None,
    keep_champion: str | None = None,
    shadow: ShadowVerdict | None = None,
    gate: ShadowGate | None = None,
) -> Outcome:
    """Whether `version` (its holdout scores: `challenger`) replaces the champion (`champion`: its scores
    on the same rows; None: there is none, `problem` says why when the record has one, and `version` becomes
    the first). `keep_champion`, a reason, keeps the champion: the holdout verdict is recorded as failed with it."""
    if champion is None:
        reason = f"first champion ({problem})" if problem else "first champion: none existed"
        return Outcome(True, reason, (True, reason))
    on_holdout = holdout_verdict(rule, challenger, champion)
    if keep_champion is not None:
        on_holdout = (False, f"champion kept: {keep_champion} (holdout: {on_holdout[1]})")
    return Outcome(*with_shadow(on_holdout, shadow, gate, version), on_holdout, shadow)


def decide_shadowed(
    version: str, champion: str, recorded: GateRecord | None, shadow: ShadowVerdict, gate: ShadowGate
) -> Outcome:
    """Whether the shadowed `version` replaces `champion`: its holdout verdict recorded at registration
    (`recorded`) against that same champion, combined with its shadow verdict."""
    if recorded is None:
        reason = f"champion kept: version {version} has no recorded holdout verdict against a champion"
        return Outcome(False, reason, (False, reason), shadow)
    if recorded.champion != champion:
        reason = (
            f"champion kept: version {version} was compared on the holdout with version {recorded.champion}, "
            f"the champion is now version {champion}: retrain to compare again"
        )
        return Outcome(False, reason, (False, reason), shadow)
    holdout = (recorded.passed, recorded.reason)
    return Outcome(*with_shadow(holdout, shadow, gate, version), holdout, shadow)
