"""The candidate model: the best tuned family refit on the training rows, calibrated on its validation
folds, and scored on the shared holdout (`mfd.modeling.holdout`), rows no trial and no fit ever saw, and
on the shifted holdouts (`mfd.modeling.shifts`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mfd.errors import MfdError
from mfd.modeling.budget import NO_DEADLINE, Deadline, OutOfTime, Spent
from mfd.modeling.calibration import CALIBRATIONS, CalibratedModel, brier
from mfd.modeling.early_warning import (
    KEYS,
    budget_threshold,
    figures,
    has_keys,
    lead_of,
    rank_by_lead,
    table,
)
from mfd.modeling.families import FAMILIES, check_family
from mfd.modeling.holdout import assert_disjoint, holdout_split, time_honest
from mfd.modeling.lead_time import LeadTime, failures_from_labels, hours_to_failure
from mfd.modeling.metrics import latency, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, ReadingFeatures
from mfd.modeling.robust import Robustness
from mfd.modeling.rul import RulHead, attach, fit_rul_head, rul_errors
from mfd.modeling.shifts import (
    CrossSource,
    ShiftConfig,
    cross_source_scores,
    cross_sources,
    shifted_scores,
)
from mfd.modeling.training_data import labelled, trainability_problem
from mfd.modeling.tuning import Final, Folds, Tuned, fit_pipeline, prepare_folds, refit, tune_families
from mfd.profiles import MACHINE
from mfd.schema import LABEL_COLUMN, PROFILE

# Of the time budget, the share the tuning race may spend at most; the rest refits, calibrates and scores
# the shifted holdouts.
TUNING_SHARE = 0.6
# The race also ends this many of the slowest contender's fold fits before the deadline: the winner's refit
# (all tuning rows: 1.25 folds' rows) runs beside its two cross-source fits (0.8 each) on two threads.
REFIT_FOLDS = 2.0
# Kept after the other families' fits for the latency measurement.
LATENCY_RESERVE_S = 2.0


@dataclass
class Candidate:
    """A trained candidate: the pipeline (fit on the tuning rows only, calibrated), its threshold, its CV
    scores, and its scores on a holdout no trial and no fit ever saw (kept so the champion can be judged
    on it too) and on the shifted holdouts.

    `validation` holds the out-of-fold validation predictions of the chosen configuration, one row per
    tuning row it scored (all of them, unless the time budget stopped it after some folds): `y` (0/1
    label), `proba` (failure probability through the same calibrator as the pipeline), `machine_type`;
    per-machine-type thresholds can be chosen on it without touching the holdout. `shifted` has one row per (family, shift) with the scores of `mfd.modeling.metrics`.
    """

    family: str
    params: dict[str, Any]
    threshold: float
    pipeline: Pipeline
    cv: dict[str, float]
    holdout_scores: dict[str, float]
    holdout: pd.DataFrame
    families: pd.DataFrame
    fit_seconds: float
    seconds: float
    latency: dict[str, float] = field(default_factory=dict)
    validation: pd.DataFrame = field(default_factory=pd.DataFrame)
    shifted: pd.DataFrame = field(default_factory=pd.DataFrame)
    calibration: dict[str, Any] = field(default_factory=dict)
    robustness: Robustness = field(default_factory=Robustness)
    shifts: ShiftConfig = field(default_factory=ShiftConfig)
    budget: dict[str, float] = field(default_factory=dict)
    spent: Spent = field(default_factory=lambda: Spent(None))
    # Early warning: lead-time figures on the holdout's machines per family (rows) and of the candidate
    # (`lead_*`), how `auto` chose ("lead time" or the CV objective), and the RUL head's holdout figures.
    lead: pd.DataFrame = field(default_factory=pd.DataFrame)
    lead_scores: dict[str, float] = field(default_factory=dict)
    selected_by: str = "cv objective"
    rul_scores: dict[str, float] = field(default_factory=dict)

    @property
    def holdout_proba(self) -> np.ndarray:
        return self.pipeline.predict_proba(self.holdout[list(MODEL_INPUT_COLUMNS)])[:, 1]

    @property
    def gate_holdout(self) -> pd.DataFrame:
        """The rows the promotion gate scores challenger and champion on: the holdout, and under the robust
        objective its noisy copy after it (so the gate's metric covers clean and noisy readings)."""
        if not self.robustness.robust:
            return self.holdout
        return pd.concat([self.holdout, self.shifts.noise.apply(self.holdout)], ignore_index=True)

    def shift_table(self, shift: str) -> pd.DataFrame:
        """Scores of every family on one shifted holdout (`clean`, `noisy`, `label_noise`, ...)."""
        rows = self.shifted[self.shifted["shift"] == shift]
        return rows.drop(columns=["shift"]).set_index("family")


def family_table(results: list[Tuned], skipped: tuple[str, ...] = (), budget_s: float = 0.0) -> pd.DataFrame:
    """One row per family: objective and CV scores at its threshold (clean, noisy), trials, tuning seconds,
    folds run and whether the race stopped it; the `skipped` families (never reached within the budget)
    are listed with empty scores."""
    rows = [
        {
            "family": r.family,
            "objective": r.objective,
            **{k: v for k, v in r.cv.items() if k != "objective"},
            "threshold": r.threshold,
            "trials": r.trials,
            "tune_s": r.seconds,
            "folds_run": r.folds_run,
            "status": f"stopped: {r.stopped}" if r.pruned else "tuned",
        }
        for r in results
    ]
    rows += [{"family": f, "status": f"skipped: time budget of {budget_s:g} s spent"} for f in skipped]
    return pd.DataFrame(rows).set_index("family")


def _split_off_holdout(df: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shared holdout split of `df`'s labelled rows; rows without a reading id (e.g. AI4I) are
    identified by their position."""
    rows = df[df[LABEL_COLUMN].notna()] if LABEL_COLUMN in df.columns else df
    if "id" not in rows.columns:
        rows = rows.assign(id=np.arange(1, len(rows) + 1))
    split = holdout_split(rows, fraction, seed)
    return split.train, split.holdout


@dataclass(frozen=True)
class _FitJob:
    """One fit after the race: `family`'s tuned params on `source` (`tuning` rows, or a cross-source one)."""

    tuned: Tuned
    source: str
    deadline: Deadline


def _fit_after_race(
    job: _FitJob, tuning: pd.DataFrame, cross: CrossSource | None, seed: int, robustness: Robustness
) -> Pipeline | None:
    """The job's pipeline; None when its deadline came first."""
    rows = tuning if job.source == "tuning" else cross_sources(cross)[job.source]
    try:
        return fit_pipeline(job.tuned.family, job.tuned.params, rows, seed, robustness, job.deadline)
    except OutOfTime:
        return None


def _rows_of(
    tuned: Tuned,
    pipeline: Pipeline | None,
    threshold: float,
    cross_fits: dict[str, Pipeline],
    held: pd.DataFrame,
    shifts: ShiftConfig,
) -> list[dict[str, Any]]:
    """One row per holdout of a family's scores: `pipeline` on the clean and shifted holdouts (none without
    it) and its `cross_fits` (training source -> pipeline) on the other source."""
    out = {} if pipeline is None else shifted_scores(pipeline, threshold, held, shifts)
    if shifts.cross is not None:
        out |= cross_source_scores(cross_fits, shifts.cross, threshold)
    return [{"family": tuned.family, "shift": name, **s} for name, s in out.items()]


def _keys(frame: pd.DataFrame) -> pd.DataFrame | None:
    """Machine and time of `frame`'s labelled rows, in `labelled`'s row order; None without them."""
    if not has_keys(frame) or LABEL_COLUMN not in frame.columns:
        return None
    return frame.loc[frame[LABEL_COLUMN].notna(), list(KEYS)].reset_index(drop=True)


def _by_lead(results: list[Tuned], tuning: pd.DataFrame) -> tuple[list[Tuned], str]:
    """`results` ranked by the lead time of their out-of-fold predictions (families that ran every fold;
    the others keep their places after them), where machines run to failure and rows have times."""
    if not PROFILE.run_to_failure or not has_keys(tuning):
        return results, "cv objective"
    complete = [r for r in results if r.eligible and np.isfinite(r.oof).all()]
    if len(complete) < 2:
        return results, "cv objective"
    leads = {r.family: lead_of(tuning, r.oof, r.threshold) for r in complete}
    order = rank_by_lead(leads, {r.family: r.objective for r in complete})
    ranked = sorted(complete, key=lambda r: order.index(r.family))
    return ranked + [r for r in results if r not in complete], "lead time (out-of-fold)"


def _rul_head(final_features: Any, tuning: pd.DataFrame, seed: int) -> RulHead | None:
    """The RUL head on the tuning rows, where the profile runs machines to failure and caps RUL."""
    if not (PROFILE.run_to_failure and PROFILE.rul_cap is not None and has_keys(tuning)):
        return None
    hours = hours_to_failure(tuning, failures_from_labels(tuning, LABEL_COLUMN, PROFILE.horizon))
    inputs = tuning[list(MODEL_INPUT_COLUMNS)]
    return fit_rul_head(final_features, inputs, hours, PROFILE.rul_cap, seed=seed)


def rul_scores(head: RulHead | None, held: pd.DataFrame) -> dict[str, float]:
    """The RUL head's errors on the holdout (`rul_errors`); empty without a head or machine and time."""
    if head is None or not has_keys(held):
        return {}
    return rul_errors(held, head.predict(held[list(MODEL_INPUT_COLUMNS)]))


def _leads(
    best: Tuned, final_proba: np.ndarray, threshold: float, others: list[tuple[Tuned, Pipeline | None]], held
) -> dict[str, LeadTime]:
    """Lead time on the holdout's machines: the candidate, and every other family fit on the tuning rows."""
    if not has_keys(held):
        return {}
    out = {best.family: lead_of(held, final_proba, threshold)}
    for tuned, pipeline in others:
        if pipeline is not None:
            proba = pipeline.predict_proba(held[list(MODEL_INPUT_COLUMNS)])[:, 1]
            out[tuned.family] = lead_of(held, proba, tuned.threshold)
    return out


@dataclass(frozen=True)
class _Settings:
    """What `train_candidate` was asked for, in one place for its steps."""

    family: str
    folds: int
    trials: int
    seed: int
    metric: str
    robustness: Robustness
    calibration: str
    shifts: ShiftConfig
    candidates: tuple[str, ...] | None

    @property
    def pool(self) -> tuple[str, ...]:
        """The families the candidate is chosen from."""
        return (self.candidates or tuple(FAMILIES)) if self.family == "auto" else (self.family,)

    @property
    def sources(self) -> tuple[str, ...]:
        """The cross-source training sources (none without a cross-source shift)."""
        return () if self.shifts.cross is None else ("ai4i", "fleet")


@dataclass(frozen=True)
class _Rows:
    """The tuning rows and the holdout's labelled rows (machine and time riding along where the frames have
    them), and the tuning rows' prepared folds."""

    tuning: pd.DataFrame
    held: pd.DataFrame
    prepared: Folds


@dataclass(frozen=True)
class _Ranked:
    """The tuned families, the candidate's first, how they were ranked, and the ones never reached."""

    results: list[Tuned]
    selected_by: str
    skipped: tuple[str, ...]

    @property
    def best(self) -> Tuned:
        return self.results[0]

    @property
    def others(self) -> list[Tuned]:
        """The other families that may be scored (ran two folds or more)."""
        return [r for r in self.results[1:] if r.eligible]


@dataclass(frozen=True)
class _Scored:
    """After the race: the winner refit (RUL head attached, threshold on the budget), the other fits by
    (family, source) (None: cut by the deadline), and the holdout's scores."""

    final: Final
    head: RulHead | None
    fitted: dict[tuple[str, str], Pipeline | None]
    proba: np.ndarray
    raw: np.ndarray
    shifted: list[dict[str, Any]]


def _rows(df: pd.DataFrame, holdout: pd.DataFrame | None, holdout_fraction: float, the: _Settings) -> _Rows:
    """The labelled tuning and holdout rows (the holdout split off `df` when none is given; MfdError when a
    reading is in both) and the tuning rows' folds, grouped by machine where the split is time-honest."""
    if holdout is None:
        df, holdout = _split_off_holdout(df, holdout_fraction, the.seed)
    elif "id" in df.columns and "id" in holdout.columns:
        assert_disjoint(df, frozenset(int(i) for i in holdout["id"]), "the training rows")
    tuning, held = labelled(df), labelled(holdout)
    train_keys, held_keys = _keys(df), _keys(holdout)
    # Machine and time ride along (never model inputs): grouped folds, lead time, the RUL target.
    tuning = tuning if train_keys is None else pd.concat([tuning, train_keys], axis=1)
    held = held if held_keys is None else pd.concat([held, held_keys], axis=1)
    groups = tuning[MACHINE].astype(str).to_numpy() if time_honest(tuning) else None
    return _Rows(tuning, held, prepare_folds(tuning, the.folds, the.seed, the.robustness, groups))


def _race(rows: _Rows, the: _Settings, end: Deadline, spent: Spent) -> _Ranked:
    """The tuning race within `end` (the race itself within TUNING_SHARE of the budget), its results ranked
    (by lead time where `auto` can tell), and the families it never reached."""
    results = tune_families(
        the.family,
        rows.tuning,
        folds=the.folds,
        trials=the.trials,
        seed=the.seed,
        metric=the.metric,
        robustness=the.robustness,
        prepared=rows.prepared,
        candidates=the.candidates,
        deadline=end,
        latest=Deadline(spent.started + TUNING_SHARE * spent.budget_s) if spent.budget_s else None,
        reserve_fits=REFIT_FOLDS,
    )
    ranked, selected_by = (
        _by_lead(results, rows.tuning) if the.family == "auto" else (results, "cv objective")
    )
    skipped = tuple(f for f in the.pool if f not in {r.family for r in ranked})
    return _Ranked(ranked, selected_by, skipped)


def _refit_and_score(ranked: _Ranked, rows: _Rows, the: _Settings, optional: Deadline) -> _Scored:
    """The winner refit and calibrated beside its RUL head and its cross-source fits, then every other
    family's fit on the tuning rows and its cross-source fits until `optional`; all scored on the clean and
    shifted holdouts.

    One thread per fit and prediction, two at a time: on a small, busy machine OpenMP threads mostly spin
    against each other (docs/training.md). The latency after it is measured as the model is served, with the
    default threads."""
    best, others, tuning, held = ranked.best, ranked.others, rows.tuning, rows.held
    jobs = [_FitJob(best, s, NO_DEADLINE) for s in the.sources]
    jobs += [_FitJob(r, "tuning", optional) for r in others]
    jobs += [_FitJob(r, s, optional) for r in others for s in the.sources]
    with threadpool_limits(1), ThreadPoolExecutor(2) as pool:
        refitted = pool.submit(
            refit,
            best,
            tuning,
            rows.prepared,
            seed=the.seed,
            robustness=the.robustness,
            calibration=the.calibration,
        )
        head = pool.submit(_rul_head, ReadingFeatures(), tuning, the.seed)
        futures = [
            pool.submit(_fit_after_race, j, tuning, the.shifts.cross, the.seed, the.robustness) for j in jobs
        ]
        final = refitted.result()
        threshold = budget_threshold(tuning, final.oof, final.threshold)
        final = replace(final, pipeline=attach(final.pipeline, head.result()), threshold=threshold)
        fitted = {(j.tuned.family, j.source): f.result() for j, f in zip(jobs, futures, strict=True)}
        proba = final.pipeline.predict_proba(held[list(MODEL_INPUT_COLUMNS)])[:, 1]
        model = final.pipeline.steps[-1][1]
        raw = (
            model.model.predict_proba(final.pipeline.steps[0][1].transform(held))[:, 1]
            if isinstance(model, CalibratedModel)
            else proba
        )
        shifted = []
        for tuned in [best, *others]:
            pipeline = final.pipeline if tuned is best else fitted[(tuned.family, "tuning")]
            threshold = final.threshold if tuned is best else tuned.threshold
            cross_fits = {s: fitted[(tuned.family, s)] for s in the.sources if fitted[(tuned.family, s)]}
            shifted += _rows_of(tuned, pipeline, threshold, cross_fits, held, the.shifts)
    return _Scored(final, head.result(), fitted, proba, raw, shifted)


def train_candidate(
    df: pd.DataFrame,
    *,
    holdout: pd.DataFrame | None = None,
    family: str = "auto",
    folds: int = 5,
    trials: int = 5,
    seed: int = 0,
    holdout_fraction: float = 0.2,
    metric: str = "pr_auc",
    robustness: Robustness | None = None,
    calibration: str = "sigmoid",
    shifts: ShiftConfig | None = None,
    time_budget_s: float | None = None,
    candidates: tuple[str, ...] | None = None,
    spent: Spent | None = None,
    reserve_s: float = 0.0,
) -> Candidate:
    """Tune `family` (or all, for `auto`) on `df` for the `robustness` objective, refit the best on `df`,
    calibrate it (`calibration`: sigmoid, isotonic or none) on its validation folds, and score it and every
    other tuned family on `holdout` and on its shifted copies (`shifts`; cross-source for the chosen family
    always, for the others while the time budget lasts).

    `holdout` is the shared holdout (the `holdout` asset); when both frames carry reading ids, a reading in
    both raises MfdError. Without it, the shared holdout mechanism splits `holdout_fraction` of `df` off
    first (seeded with `seed`). `time_budget_s` bounds the whole call in wall-clock time (or `spent`, the
    caller's running budget, bounds it, less `reserve_s` the caller keeps for what follows, e.g. MLflow
    logging): the race gets at most TUNING_SHARE of it and ends early enough for the winner's refit and
    cross-source fits (REFIT_FOLDS of its fold fits); the other families' fits after it are cut at the
    deadline. `candidates` limits `auto` to those families."""
    spent = spent or Spent(time_budget_s)
    check_family(family)
    if calibration not in CALIBRATIONS:
        raise MfdError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATIONS)}")
    robustness = robustness or Robustness()
    shifts = shifts or ShiftConfig(noise=robustness.noise)
    the = _Settings(family, folds, trials, seed, metric, robustness, calibration, shifts, candidates)
    problem = trainability_problem(df if holdout is None else pd.concat([df, holdout]), folds)
    if problem:
        raise MfdError(f"cannot train on this training set: {problem}")
    end = spent.deadline.earlier(reserve_s)
    with spent.phase("folds"):
        rows = _rows(df, holdout, holdout_fraction, the)
    with spent.phase("tuning"), threadpool_limits(1):  # the racing threads' limits nest inside this one
        ranked = _race(rows, the, end, spent)
    tuned_s = spent.total_s
    with spent.phase("refit_and_shifted_holdouts"):
        scored = _refit_and_score(ranked, rows, the, end.earlier(LATENCY_RESERVE_S))
    budget = {
        "time_budget_s": float("nan") if time_budget_s is None else time_budget_s,
        "tuning_s": tuned_s,
        "fits_cut_by_budget": float(sum(f is None for f in scored.fitted.values())),
    }
    with spent.phase("lead_time"):
        others = [(r, scored.fitted[(r.family, "tuning")]) for r in ranked.others]
        leads = _leads(ranked.best, scored.proba, scored.final.threshold, others, rows.held)
        rul = rul_scores(scored.head, rows.held)
    with spent.phase("latency"):
        measured = latency(scored.final.pipeline, pd.concat([rows.tuning, rows.held], ignore_index=True))
    return _candidate(
        the, rows, ranked, scored, spent, budget=budget, leads=leads, rul=rul, measured=measured
    )


def _candidate(
    the: _Settings,
    rows: _Rows,
    ranked: _Ranked,
    scored: _Scored,
    spent: Spent,
    *,
    budget: dict[str, float],
    leads: dict[str, LeadTime],
    rul: dict[str, float],
    measured: dict[str, float],
) -> Candidate:
    """The Candidate of `train_candidate`'s steps."""
    best, final, held = ranked.best, scored.final, rows.held
    y_held = held[LABEL_COLUMN].to_numpy()
    validation = pd.DataFrame(
        {"y": rows.prepared.y, "proba": final.oof, "machine_type": rows.prepared.machine_type}
    )
    return Candidate(
        family=best.family,
        params=best.params,
        threshold=final.threshold,
        pipeline=final.pipeline,
        cv=best.cv,
        holdout_scores=scores(y_held, scored.proba, final.threshold),
        holdout=held,
        families=family_table(ranked.results, ranked.skipped, spent.budget_s or 0.0),
        fit_seconds=spent.phases.get("refit_and_shifted_holdouts", 0.0),
        seconds=spent.total_s,
        latency=measured,
        validation=validation.dropna(subset=["proba"]).reset_index(drop=True),
        shifted=pd.DataFrame(scored.shifted),
        calibration={
            "method": the.calibration,
            "holdout_brier_uncalibrated": brier(y_held, scored.raw),
            "holdout_brier": brier(y_held, scored.proba),
            "holdout_proba_uncalibrated": scored.raw,
        },
        robustness=the.robustness,
        shifts=the.shifts,
        budget=budget,
        spent=spent,
        lead=table(leads) if leads else pd.DataFrame(),
        lead_scores=figures(leads[best.family]) if leads else {},
        selected_by=ranked.selected_by,
        rul_scores=rul,
    )
