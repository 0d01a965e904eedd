"""Optuna tuning of the model families on stratified k-fold CV (a threshold chosen on the out-of-fold
predictions), the `auto` screen across families under a time budget, and nested CV for honest scores of
the whole procedure.

Every trial is scored on each validation fold twice, clean and with measurement noise (`Robustness`): the
objective (`robust` by default) decides trials, families and thresholds. The shifted holdout is never
used here.

`auto` with a time budget is a successive-halving race: every family's reference configuration runs fold
by fold on two threads, and a family whose running objective after two or more folds trails the best
family at the same fold by more than SCREEN_MARGIN stops there (it cannot win); the families that finish
within SCREEN_MARGIN of the best share what is left of the tuning budget for more trials (optuna, median
pruning after each fold).

The budget is wall-clock and holds inside a fold: every fit gets the race's deadline
(`mfd.modeling.budget.fit_within`: forests and boosting grow in chunks, the deadline checked in between),
a fold is not started when the family's slowest fold so far would not finish before it, and the deadline
comes early by `reserve_fits` x the slowest fold fit of a family still in the race, the time the winner's
refit and cross-source fits after the race will take. Until one family has run two folds (the least a
candidate needs) no fit is cut.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn

import numpy as np
import optuna
import pandas as pd
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from mfd.errors import MfdError
from mfd.features import feature_matrix
from mfd.modeling.budget import NO_DEADLINE, Deadline, OutOfTime, fit_within
from mfd.modeling.calibration import CalibratedModel, Calibrator
from mfd.modeling.families import FAMILIES, check_family
from mfd.modeling.metrics import best_threshold, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, ReadingFeatures, build_pipeline
from mfd.modeling.robust import Robustness, combined
from mfd.modeling.training_data import labelled
from mfd.schema import LABEL_COLUMN

log = logging.getLogger(__name__)

# `auto` tunes further only the families whose reference params score within this of the best.
SCREEN_MARGIN = 0.05
# The race order: cheap families first, so the slow ones meet a bar to beat early.
SCREEN_ORDER: tuple[str, ...] = ("hgb", "blend", "logreg", "rf", "mlp", "vote", "svm")


@dataclass(frozen=True)
class Tuned:
    """The best trial of one family: its params, its CV scores (clean, `noisy_*`, and `objective`) and its
    out-of-fold probabilities on the clean and the noisy validation folds. A family the race stopped early
    (`stopped`: "trails" or "time budget") has scores from its first `folds_run` folds only."""

    family: str
    params: dict[str, Any]
    cv: dict[str, float]
    threshold: float
    oof: np.ndarray
    oof_noisy: np.ndarray
    trials: int
    seconds: float
    folds_run: int
    stopped: str = ""
    fold_fit_s: float = 0.0  # the slowest fold fit of the family (wall seconds)

    @property
    def pruned(self) -> bool:
        return bool(self.stopped)

    @property
    def eligible(self) -> bool:
        """Can be the candidate: finished, or stopped by the time budget after two or more folds (compared,
        as successive halving does, on the folds it ran); a family that trailed cannot."""
        return not self.stopped or (self.stopped == "time budget" and self.folds_run >= 2)

    @property
    def objective(self) -> float:
        return self.cv["objective"]


@dataclass(frozen=True)
class Fold:
    """One CV split, its model inputs made once for every trial and family."""

    valid: np.ndarray
    train_x: pd.DataFrame
    train_y: np.ndarray
    valid_x: pd.DataFrame
    noisy_x: pd.DataFrame


@dataclass(frozen=True)
class Folds:
    y: np.ndarray
    machine_type: np.ndarray
    splits: list[Fold]


def prepare_folds(
    df: pd.DataFrame, folds: int, seed: int, robustness: Robustness, groups: np.ndarray | None = None
) -> Folds:
    """Stratified `folds`-fold splits of the labelled rows of `df`: the (jittered) training inputs, the
    clean and the noisy validation inputs of each. With `groups` (one machine id per labelled row: the
    time-honest evaluation of machines run to failure) no machine is in a fold's training and validation
    rows both (StratifiedGroupKFold)."""
    data = labelled(df)
    y = data[LABEL_COLUMN].to_numpy()
    splitter = (
        StratifiedKFold(folds, shuffle=True, random_state=seed).split(data, y)
        if groups is None
        else StratifiedGroupKFold(folds, shuffle=True, random_state=seed).split(data, y, groups)
    )
    splits = []
    for k, (train, valid) in enumerate(splitter):
        fit_rows = robustness.jittered(data.iloc[train], seed=seed * 100 + k)
        splits.append(
            Fold(
                valid=valid,
                train_x=feature_matrix(fit_rows),
                train_y=fit_rows[LABEL_COLUMN].to_numpy(),
                valid_x=feature_matrix(data.iloc[valid]),
                noisy_x=feature_matrix(robustness.noisy_validation(data.iloc[valid], k)),
            )
        )
    return Folds(y, data["machine_type"].astype("string").to_numpy(dtype=object), splits)


@dataclass
class Race:
    """The running objective of each family after each fold, shared by the racing threads, and when tuning
    ends: `end` brought forward by `reserve_fits` x the slowest fold fit of a family still in the race, or
    `latest`, whichever comes first."""

    margin: float = SCREEN_MARGIN
    end: Deadline = NO_DEADLINE
    latest: Deadline = NO_DEADLINE
    reserve_fits: float = 0.0
    by_fold: dict[int, dict[str, float]] = field(default_factory=dict)
    finished: set[str] = field(default_factory=set)
    eligible: set[str] = field(default_factory=set)  # ran two folds or more
    trailing: set[str] = field(default_factory=set)
    fold_s: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def trails(self, family: str, fold: int, value: float) -> bool:
        """Record `value`; True when the family cannot win: from the second fold on, it trails the best
        family at this fold by more than the margin."""
        with self.lock:
            at = self.by_fold.setdefault(fold, {})
            at[family] = value
            others = [v for f, v in at.items() if f != family]
            trails = fold >= 1 and bool(others) and value < max(others) - self.margin
            if trails:
                self.trailing.add(family)
            elif fold >= 1:
                self.eligible.add(family)
        return trails

    def fitted(self, family: str, seconds: float) -> None:
        with self.lock:
            self.fold_s[family] = max(self.fold_s.get(family, 0.0), seconds)

    def deadline(self) -> Deadline:
        with self.lock:
            slowest = max((self.fold_s.get(f, 0.0) for f in self.eligible - self.trailing), default=0.0)
        return Deadline(min(self.latest.at, self.end.earlier(self.reserve_fits * slowest).at))

    def fit_deadline(self) -> Deadline:
        """The deadline a fit gets: none until some family has run two folds, so the race always has a
        candidate."""
        with self.lock:
            some = bool(self.eligible - self.trailing)
        return self.deadline() if some else NO_DEADLINE

    def out_of_time(self) -> bool:
        return self.deadline().passed()


def _fold_metric(y: np.ndarray, proba: np.ndarray, metric: str) -> float:
    return scores(y, proba, 0.5)[metric]


# A trial's out-of-fold predictions (clean, noisy), the folds it ran, and why it stopped ("" when it ran all).
_Outcome = tuple[np.ndarray, np.ndarray, int, str]


@dataclass
class _Objective:
    """Optuna's objective for one family: the trial's params scored fold by fold on the prepared folds,
    each fit within the race's deadline; `outcome` keeps what every trial that ran a fold left."""

    family: str
    prepared: Folds
    race: Race
    robustness: Robustness
    metric: str
    reference: bool
    trials: int
    seed: int
    outcome: dict[int, _Outcome] = field(default_factory=dict)

    def _stop(self, trial: optuna.Trial, step: int, oof: np.ndarray, oof_noisy: np.ndarray) -> NoReturn:
        """The deadline came: no more trials; the race's reference trial keeps the folds it ran."""
        if step and self.reference:
            self.outcome[trial.number] = (oof, oof_noisy, step, "time budget")
        trial.study.stop()
        raise optuna.TrialPruned()

    def __call__(self, trial: optuna.Trial) -> float:
        spec, y, race, family = FAMILIES[self.family], self.prepared.y, self.race, self.family
        params = spec.space(trial)
        oof, oof_noisy = np.full(len(y), np.nan), np.full(len(y), np.nan)
        values: list[float] = []
        for step, fold in enumerate(self.prepared.splits):
            deadline, fit_started = race.fit_deadline(), time.perf_counter()
            try:
                deadline.check(expected_s=race.fold_s.get(family, 0.0))
                model = fit_within(clone(spec.make(params, self.seed)), fold.train_x, fold.train_y, deadline)
            except OutOfTime:
                self._stop(trial, step, oof, oof_noisy)
            race.fitted(family, time.perf_counter() - fit_started)
            oof[fold.valid] = model.predict_proba(fold.valid_x)[:, 1]
            oof_noisy[fold.valid] = model.predict_proba(fold.noisy_x)[:, 1]
            yv = y[fold.valid]
            values.append(
                self.robustness.value(
                    _fold_metric(yv, oof[fold.valid], self.metric),
                    _fold_metric(yv, oof_noisy[fold.valid], self.metric),
                )
            )
            mean = float(np.mean(values))
            trial.report(mean, step)
            if self.reference and race.trails(family, step, mean):
                self.outcome[trial.number] = (oof, oof_noisy, step + 1, "trails")
                raise optuna.TrialPruned()
            if trial.should_prune():
                raise optuna.TrialPruned()
        self.outcome[trial.number] = (oof, oof_noisy, len(self.prepared.splits), "")
        # One line per finished trial: `mfd train` shows them as progress, a Dagster run as log lines.
        log.info(
            "%s trial %d/%d: %s %.4f",
            family,
            trial.number + 1,
            self.trials,
            self.metric,
            float(np.mean(values)),
        )
        return float(np.mean(values))


def _study(family: str, trials: int, seed: int, reference: bool) -> optuna.Study:
    """A seeded TPE study with median pruning after each fold; the family's reference params queued first
    if `reference`, then its regularized ones (unless the reference is the only trial)."""
    spec = FAMILIES[family]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    if reference:
        study.enqueue_trial(spec.reference)
    if spec.regularized is not None and (not reference or trials > 1):
        study.enqueue_trial(spec.regularized)
    return study


def _best_trial(study: optuna.Study, outcome: dict[int, _Outcome]) -> optuna.trial.FrozenTrial | None:
    """The best completed trial; else the race's reference trial stopped on the folds it ran; else None."""
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if completed:
        return max(completed, key=lambda t: t.value)
    if outcome:
        return study.trials[next(iter(outcome))]
    return None


def tune(
    family: str,
    df: pd.DataFrame | None = None,
    *,
    folds: int = 5,
    trials: int = 5,
    seed: int = 0,
    metric: str = "pr_auc",
    reference: bool = True,
    robustness: Robustness | None = None,
    prepared: Folds | None = None,
    race: Race | None = None,
) -> Tuned | None:
    """`trials` optuna trials (TPE, seeded; the family's reference params first if `reference`; median
    pruning after each fold) scored by stratified `folds`-fold CV on `df` (labelled readings), or on the
    `prepared` folds. With a `race`, the family stops when it trails and fits stop at its deadline;
    None when no trial finished a fold (the deadline came first)."""
    check_family(family, tuple(FAMILIES))
    robustness = robustness or Robustness()
    race = race or Race()
    started = time.perf_counter()
    if prepared is None:
        if df is None:
            raise MfdError("tune needs the training rows or their prepared folds")
        prepared = prepare_folds(df, folds, seed, robustness)
    objective = _Objective(family, prepared, race, robustness, metric, reference, trials, seed)
    study = _study(family, trials, seed, reference)
    # One thread per fit: on a small, busy machine OpenMP/BLAS threads mostly spin against each other.
    with threadpool_limits(1):
        study.optimize(objective, n_trials=trials)
    best = _best_trial(study, objective.outcome)
    if best is None:
        return None
    oof, oof_noisy, folds_run, stopped = objective.outcome[best.number]
    if not stopped:
        with race.lock:
            race.finished.add(family)
    return _summarize(
        family,
        dict(best.params),
        prepared,
        oof,
        oof_noisy,
        robustness,
        metric,
        trials=len(study.trials),
        seconds=time.perf_counter() - started,
        folds_run=folds_run,
        stopped=stopped,
        fold_fit_s=race.fold_s.get(family, 0.0),
    )


def _summarize(
    family: str,
    params: dict[str, Any],
    prepared: Folds,
    oof: np.ndarray,
    oof_noisy: np.ndarray,
    robustness: Robustness,
    metric: str,
    **counts: Any,
) -> Tuned:
    scored = ~np.isnan(oof)
    y, clean, noisy = prepared.y[scored], oof[scored], oof_noisy[scored]
    threshold = best_threshold(*combined(y, clean, noisy, robustness.robust))
    cv = scores(y, clean, threshold)
    cv |= {f"noisy_{k}": v for k, v in scores(y, noisy, threshold).items()}
    cv["objective"] = robustness.value(cv[metric], cv[f"noisy_{metric}"])
    return Tuned(
        family=family, params=params, cv=cv, threshold=threshold, oof=oof, oof_noisy=oof_noisy, **counts
    )


def _tune_all(names: list[str], **kwargs: Any) -> list[Tuned | None]:
    # Two families at a time, in threads: the fits release the GIL.
    return Parallel(n_jobs=min(len(names), 2), prefer="threads")(delayed(tune)(n, **kwargs) for n in names)


def tune_families(
    family: str,
    df: pd.DataFrame,
    *,
    folds: int,
    trials: int,
    seed: int,
    metric: str = "pr_auc",
    robustness: Robustness | None = None,
    time_budget_s: float | None = None,
    prepared: Folds | None = None,
    candidates: tuple[str, ...] | None = None,
    deadline: Deadline | None = None,
    latest: Deadline | None = None,
    reserve_fits: float = 0.0,
) -> list[Tuned]:
    """Tuning results, best objective first (families that cannot be the candidate last). For `auto`: the race of
    every family's reference params, then up to `trials - 1` more trials for the families within
    SCREEN_MARGIN of the best, all before `deadline` (default: `time_budget_s` from now; None: no limit)
    less `reserve_fits` x the slowest fold fit of a family in the race, and before `latest`; `candidates`
    limits the race to those families (default: all)."""
    robustness = robustness or Robustness()
    prepared = prepared or prepare_folds(df, folds, seed, robustness)
    race = Race(
        end=deadline or Deadline.after(time_budget_s), latest=latest or NO_DEADLINE, reserve_fits=reserve_fits
    )
    common = {"seed": seed, "metric": metric, "robustness": robustness, "prepared": prepared, "race": race}
    if family != "auto":
        return [r for r in [tune(family, trials=trials, **common)] if r is not None]
    pool = tuple(FAMILIES) if candidates is None else candidates
    for name in pool:
        check_family(name, tuple(FAMILIES))
    order = [f for f in SCREEN_ORDER if f in pool] + [f for f in pool if f not in SCREEN_ORDER]
    screened = [r for r in _tune_all(order, trials=1, **common) if r is not None]
    done = [r for r in screened if not r.pruned]
    best = max((r.objective for r in screened if r.eligible), default=-np.inf)
    contenders = [r.family for r in done if r.objective >= best - SCREEN_MARGIN]
    more = (
        {
            r.family: r
            for r in _tune_all(contenders, trials=trials - 1, reference=False, **common)
            if r is not None
        }
        if trials > 1 and contenders and not race.out_of_time()
        else {}
    )
    results = []
    for first in screened:
        extra = more.get(first.family)
        if extra is None:
            results.append(first)
            continue
        better = extra if extra.objective > first.objective else first
        results.append(
            replace(better, trials=first.trials + extra.trials, seconds=first.seconds + extra.seconds)
        )
    return sorted(results, key=lambda r: (r.eligible, r.objective), reverse=True)


def fit_pipeline(
    family: str,
    params: dict[str, Any],
    rows: pd.DataFrame,
    seed: int,
    robustness: Robustness | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> Pipeline:
    """The family's pipeline fit on labelled `rows` (and their jittered copies, if configured). With a
    `deadline` (OutOfTime past it) the model is fit by `fit_within` and left unflattened: the same
    probabilities, for scoring holdouts, not for serving."""
    fit_rows = (robustness or Robustness()).jittered(labelled(rows), seed=seed * 100 + 99)
    x, y = fit_rows[list(MODEL_INPUT_COLUMNS)], fit_rows[LABEL_COLUMN].to_numpy()
    estimator = FAMILIES[family].make(params, seed)
    with threadpool_limits(1):
        if not deadline.bounded:
            return build_pipeline(estimator).fit(x, y)
        features = ReadingFeatures()
        model = fit_within(estimator, features.transform(x), y, deadline)
        return Pipeline([("features", features), ("model", model)])


@dataclass(frozen=True)
class Final:
    """The refit winner: its pipeline (calibrated when asked), its threshold, and its out-of-fold
    validation probabilities through the same calibrator (NaN for the rows of folds it never ran)."""

    pipeline: Pipeline
    threshold: float
    oof: np.ndarray
    oof_noisy: np.ndarray


def refit(
    best: Tuned,
    rows: pd.DataFrame,
    prepared: Folds,
    *,
    seed: int,
    robustness: Robustness,
    calibration: str = "sigmoid",
) -> Final:
    """`best` refit on `rows`; with a `calibration`, a calibrator fit on its clean out-of-fold validation
    probabilities wraps the model, and the threshold is chosen again on the calibrated probabilities
    (clean, and noisy for the robust objective)."""
    pipeline = fit_pipeline(best.family, best.params, rows, seed, robustness)
    if calibration == "none":
        return Final(pipeline, best.threshold, best.oof, best.oof_noisy)
    calibrator = Calibrator(calibration).fit(best.oof[~np.isnan(best.oof)], prepared.y[~np.isnan(best.oof)])
    pipeline.steps[-1] = (pipeline.steps[-1][0], CalibratedModel(pipeline.steps[-1][1], calibrator))
    scored = ~np.isnan(best.oof)  # a family the budget stopped has no predictions for its later folds
    oof, oof_noisy = np.full(len(scored), np.nan), np.full(len(scored), np.nan)
    oof[scored], oof_noisy[scored] = (
        calibrator.transform(best.oof[scored]),
        calibrator.transform(best.oof_noisy[scored]),
    )
    threshold = best_threshold(
        *combined(prepared.y[scored], oof[scored], oof_noisy[scored], robustness.robust)
    )
    return Final(pipeline, threshold, oof, oof_noisy)


@threadpool_limits.wrap(limits=1)
def nested_cv(
    df: pd.DataFrame,
    *,
    family: str = "auto",
    outer_folds: int = 5,
    inner_folds: int = 3,
    trials: int = 5,
    seed: int = 0,
    metric: str = "pr_auc",
    robustness: Robustness | None = None,
    calibration: str = "sigmoid",
    time_budget_s: float | None = None,
) -> pd.DataFrame:
    """Honest scores: per outer stratified fold, tune (and, for `auto`, pick the family) on the outer-train
    rows only, refit, calibrate, and score the outer-test rows, clean and with measurement noise (`noisy_*`,
    seeded per fold), at the threshold chosen on inner validation folds."""
    robustness = robustness or Robustness()
    data = labelled(df)
    y = data[LABEL_COLUMN].to_numpy()
    rows = []
    outer = StratifiedKFold(outer_folds, shuffle=True, random_state=seed)
    for fold, (train, test) in enumerate(outer.split(data, y)):
        inner = prepare_folds(data.iloc[train], inner_folds, seed, robustness)
        best = tune_families(
            family,
            data.iloc[train],
            folds=inner_folds,
            trials=trials,
            seed=seed,
            metric=metric,
            robustness=robustness,
            time_budget_s=time_budget_s,
            prepared=inner,
        )[0]
        started = time.perf_counter()
        final = refit(
            best, data.iloc[train], inner, seed=seed, robustness=robustness, calibration=calibration
        )
        fit_s = time.perf_counter() - started
        held = data.iloc[test]
        noisy = robustness.noise.apply(held, seed=robustness.noise.seed + fold)
        clean_p = final.pipeline.predict_proba(held[list(MODEL_INPUT_COLUMNS)])[:, 1]
        noisy_p = final.pipeline.predict_proba(noisy[list(MODEL_INPUT_COLUMNS)])[:, 1]
        rows.append(
            {
                "fold": fold,
                "family": best.family,
                **scores(y[test], clean_p, final.threshold),
                **{f"noisy_{k}": v for k, v in scores(y[test], noisy_p, final.threshold).items()},
                "threshold": final.threshold,
                "fit_s": fit_s,
                "tune_s": best.seconds,
            }
        )
    return pd.DataFrame(rows).set_index("fold")
