"""The candidate model: the best tuned family refit on the training rows, calibrated on its validation
folds, and scored on the shared holdout (`mfd.modeling.holdout`), rows no trial and no fit ever saw, and
on the shifted holdouts (`mfd.modeling.shifts`)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.pipeline import Pipeline

from mfd.errors import MfdError
from mfd.modeling.calibration import CALIBRATIONS, CalibratedModel, brier
from mfd.modeling.families import FAMILIES, check_family
from mfd.modeling.holdout import assert_disjoint, holdout_split
from mfd.modeling.metrics import latency, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.modeling.robust import Robustness
from mfd.modeling.shifts import ShiftConfig, shifted_scores
from mfd.modeling.training_data import labelled, trainability_problem
from mfd.modeling.tuning import Tuned, fit_pipeline, prepare_folds, refit, tune_families
from mfd.schema import LABEL_COLUMN

# Of the time budget, the share the tuning race may spend; the rest refits, calibrates and scores shifts.
TUNING_SHARE = 0.6


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


def _shifted_rows(
    tuned: Tuned,
    pipeline: Pipeline | None,
    threshold: float,
    tuning: pd.DataFrame,
    held: pd.DataFrame,
    seed: int,
    robustness: Robustness,
    shifts: ShiftConfig,
    cross: bool,
) -> list[dict[str, Any]]:
    """One row per holdout of `tuned`'s scores: `pipeline` (fit on `tuning` here when None) on the clean
    and shifted holdouts, and, with `cross`, its params refit on each source and scored on the other."""

    def fit(rows: pd.DataFrame) -> Pipeline:
        return fit_pipeline(tuned.family, tuned.params, rows, seed, robustness)

    if pipeline is None:
        pipeline = fit(tuning)
    config = shifts if cross else ShiftConfig(shifts.noise, shifts.label, None)
    out = shifted_scores(pipeline, threshold, held, config, fit=fit)
    return [{"family": tuned.family, "shift": name, **s} for name, s in out.items()]


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
) -> Candidate:
    """Tune `family` (or all, for `auto`) on `df` for the `robustness` objective, refit the best on `df`,
    calibrate it (`calibration`: sigmoid, isotonic or none) on its validation folds, and score it and every
    other tuned family on `holdout` and on its shifted copies (`shifts`; cross-source for every family while
    the time budget lasts, for the chosen one always).

    `holdout` is the shared holdout (the `holdout` asset); when both frames carry reading ids, a reading in
    both raises MfdError. Without it, the shared holdout mechanism splits `holdout_fraction` of `df` off
    first (seeded with `seed`). `time_budget_s` bounds the whole call: the tuning race gets TUNING_SHARE of
    it. `candidates` limits `auto` to those families."""
    started = time.perf_counter()
    check_family(family)
    if calibration not in CALIBRATIONS:
        raise MfdError(f"unknown calibration {calibration!r}; choose one of {', '.join(CALIBRATIONS)}")
    robustness = robustness or Robustness()
    shifts = shifts or ShiftConfig(noise=robustness.noise)
    problem = trainability_problem(df if holdout is None else pd.concat([df, holdout]), folds)
    if problem:
        raise MfdError(f"cannot train on this training set: {problem}")
    if holdout is None:
        df, holdout = _split_off_holdout(df, holdout_fraction, seed)
    elif "id" in df.columns and "id" in holdout.columns:
        assert_disjoint(df, frozenset(int(i) for i in holdout["id"]), "the training rows")
    tuning, held = labelled(df), labelled(holdout)
    prepared = prepare_folds(tuning, folds, seed, robustness)
    tuning_budget = (
        None if time_budget_s is None else TUNING_SHARE * time_budget_s - (time.perf_counter() - started)
    )
    results = tune_families(
        family,
        tuning,
        folds=folds,
        trials=trials,
        seed=seed,
        metric=metric,
        robustness=robustness,
        time_budget_s=tuning_budget,
        prepared=prepared,
        candidates=candidates,
    )
    tuned_s = time.perf_counter() - started
    pool = (candidates or tuple(FAMILIES)) if family == "auto" else (family,)
    skipped = tuple(f for f in pool if f not in {r.family for r in results})
    best = results[0]
    fit_started = time.perf_counter()
    final = refit(best, tuning, prepared, seed=seed, robustness=robustness, calibration=calibration)
    fit_seconds = time.perf_counter() - fit_started
    y_held = held[LABEL_COLUMN].to_numpy()
    proba = final.pipeline.predict_proba(held[list(MODEL_INPUT_COLUMNS)])[:, 1]
    model = final.pipeline.steps[-1][1]
    raw = (
        model.model.predict_proba(final.pipeline.steps[0][1].transform(held))[:, 1]
        if isinstance(model, CalibratedModel)
        else proba
    )
    shifted = _shifted_rows(
        best, final.pipeline, final.threshold, tuning, held, seed, robustness, shifts, True
    )
    others = [r for r in results[1:] if r.eligible]
    out_of_time = time_budget_s is not None and time.perf_counter() - started > time_budget_s
    if others:
        cross = not out_of_time
        for rows in Parallel(n_jobs=2, prefer="threads")(
            delayed(_shifted_rows)(r, None, r.threshold, tuning, held, seed, robustness, shifts, cross)
            for r in others
        ):
            shifted += rows
    return Candidate(
        family=best.family,
        params=best.params,
        threshold=final.threshold,
        pipeline=final.pipeline,
        cv=best.cv,
        holdout_scores=scores(y_held, proba, final.threshold),
        holdout=held,
        families=family_table(results, skipped, time_budget_s or 0.0),
        fit_seconds=fit_seconds,
        seconds=time.perf_counter() - started,
        latency=latency(final.pipeline, pd.concat([tuning, held], ignore_index=True)),
        validation=pd.DataFrame({"y": prepared.y, "proba": final.oof, "machine_type": prepared.machine_type})
        .dropna(subset=["proba"])
        .reset_index(drop=True),
        shifted=pd.DataFrame(shifted),
        calibration={
            "method": calibration,
            "holdout_brier_uncalibrated": brier(y_held, raw),
            "holdout_brier": brier(y_held, proba),
            "holdout_proba_uncalibrated": raw,
        },
        robustness=robustness,
        shifts=shifts,
        budget={
            "time_budget_s": float("nan") if time_budget_s is None else time_budget_s,
            "tuning_s": tuned_s,
            "cross_source_for_every_family": float(not out_of_time),
        },
    )
