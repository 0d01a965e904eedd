"""Wall-clock budgets that hold for a whole step: one `Deadline` for everything the step does, fits cut in
chunks with the deadline checked between them (boosting iterations, forest trees, torch epochs, the halves
of a blend), a fit not started when its expected time no longer fits, and `Spent`, the record of what each
phase of the step took against the budget (MaterializeResult metadata, MLflow, the bench)."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

# Boosting iterations / forest trees fit between two deadline checks (a fraction of a second on AI4I folds,
# docs/training.md).
BOOSTING_CHUNK = 25
FOREST_CHUNK = 25


class OutOfTime(Exception):  # noqa: N818 - what it says, read at the raise
    """The deadline passed before a fit (or a step's part) finished or could start."""


@dataclass(frozen=True)
class Deadline:
    """A point in `time.perf_counter()` seconds (infinite: no budget)."""

    at: float = math.inf

    @classmethod
    def after(cls, seconds: float | None) -> Deadline:
        """`seconds` from now; no deadline when None."""
        return cls() if seconds is None else cls(time.perf_counter() + seconds)

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.at)

    def remaining(self) -> float:
        return self.at - time.perf_counter()

    def passed(self) -> bool:
        return time.perf_counter() >= self.at

    def check(self, expected_s: float = 0.0) -> None:
        """Raise OutOfTime when the deadline has passed, or when `expected_s` more would pass it."""
        if time.perf_counter() + expected_s >= self.at:
            raise OutOfTime(f"deadline {'passed' if self.passed() else f'in {self.remaining():.1f} s'}")

    def earlier(self, seconds: float) -> Deadline:
        """`seconds` before this deadline."""
        return Deadline(self.at - seconds)


NO_DEADLINE = Deadline()


def fit_within(estimator: BaseEstimator, x: Any, y: Any, deadline: Deadline = NO_DEADLINE) -> BaseEstimator:
    """`estimator` fit on `x`, `y`, raising OutOfTime at the first check past `deadline`: a forest grows
    FOREST_CHUNK trees and a boosting BOOSTING_CHUNK iterations between checks (warm start: the same model as
    one fit), an estimator with its own `fit_within` checks where it can; any other estimator is checked
    before it starts only."""
    if not deadline.bounded:
        return estimator.fit(x, y)
    deadline.check()
    if isinstance(estimator, HistGradientBoostingClassifier):
        return _grow(estimator, "max_iter", BOOSTING_CHUNK, x, y, deadline)
    if isinstance(estimator, RandomForestClassifier):
        return _grow(estimator, "n_estimators", FOREST_CHUNK, x, y, deadline)
    if hasattr(estimator, "fit_within"):
        return estimator.fit_within(x, y, deadline)
    return estimator.fit(x, y)


def _grow(
    estimator: BaseEstimator, size: str, chunk: int, x: Any, y: Any, deadline: Deadline
) -> BaseEstimator:
    params = estimator.get_params()
    total, warm = int(params[size]), bool(params["warm_start"])
    try:
        for grown in range(chunk, total + chunk, chunk):
            estimator.set_params(warm_start=True, **{size: min(grown, total)}).fit(x, y)
            if grown < total:
                deadline.check()
    finally:
        estimator.set_params(warm_start=warm, **{size: total})
    return estimator


@dataclass
class Spent:
    """A step's budget and the wall seconds each of its phases spent, in the order they ran; `started_at`
    (epoch seconds) dates the step, e.g. for its MLflow run; CPU seconds are the process's."""

    budget_s: float | None
    started: float = field(default_factory=time.perf_counter)
    started_at: float = field(default_factory=time.time)
    cpu_started: float = field(default_factory=time.process_time)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def deadline(self) -> Deadline:
        return Deadline(self.started + self.budget_s) if self.budget_s is not None else NO_DEADLINE

    @property
    def total_s(self) -> float:
        return time.perf_counter() - self.started

    @property
    def cpu_s(self) -> float:
        return time.process_time() - self.cpu_started

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the block as phase `name` (added to it when it runs again)."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def record(self) -> dict[str, float]:
        """Flat: `budget_s` (NaN without one), `spent_s` (wall, so far), `cpu_s` and `<phase>_s` for every
        phase."""
        return {
            "budget_s": math.nan if self.budget_s is None else float(self.budget_s),
            "spent_s": self.total_s,
            "cpu_s": self.cpu_s,
            **{f"{name}_s": seconds for name, seconds in self.phases.items()},
        }

    def table(self) -> pd.DataFrame:
        """One row per phase and one for the whole step: wall seconds, and the budget on the step's row."""
        rows = [{"phase": name, "spent_s": seconds} for name, seconds in self.phases.items()]
        rows.append(
            {"phase": "step", "spent_s": self.total_s, "budget_s": self.budget_s, "cpu_s": self.cpu_s}
        )
        return pd.DataFrame(rows).set_index("phase")

    def line(self) -> str:
        """`spent 57.3 s of 60 s, 80.2 s CPU (tuning 30.1, refit 3.2, ...)`."""
        budget = "no budget" if self.budget_s is None else f"{self.budget_s:g} s"
        parts = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.phases.items())
        return f"spent {self.total_s:.1f} s of {budget}, {self.cpu_s:.1f} s CPU" + (
            f" ({parts})" if parts else ""
        )
