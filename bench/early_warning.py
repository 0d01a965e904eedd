"""Early warning on NASA C-MAPSS FD001 (vendored, mfd/data/cmapss/), on its official train/test split, in one run.

Features: the shared machine-window features (mfd.windows), nothing else. Two models, both trained here on the
100 train engines with the RUL target capped at 125 cycles:
- baseline: a plain HistGradientBoosting regressor on rolling features (window mean and standard deviation
  of all 24 channels over the profile's windows 5/15/30), default settings;
- mfd: the platform's RUL head (mfd.modeling.rul.fit_rul_head: the target capped at the cap, an average of
  HistGradientBoosting regressors, seeds 0-2, `SeedAveraged`) on the full window features (mean, std, slope,
  change since the engine's early-life baseline of 30 cycles, age in cycles) over windows 5/15/30/60, of the
  channels that vary in the training split (no operating settings: FD001 has one condition);
- mfd, profile features: the same head on the cmapss profile's own window features (all 24 channels, the
  profile's windows 5/15/30): what `make run PROFILE=cmapss` trains.

Printed:
- RUL at each test engine's last cycle against NASA's RUL_FD001.txt: RMSE and the PHM08 score (d = estimate -
  truth; exp(d/10) - 1 for d > 0, exp(-d/13) - 1 for d < 0, summed), beside published figures.
- Warning within 30 cycles (score: minus the estimated RUL): per-cycle PR AUC on the test engines (a cycle is
  positive when its engine fails within 30 cycles after it); and by 5-fold CV grouped by engine over the
  train engines: the share of engines warned >= 15 cycles ahead (mfd.modeling.lead_time, alarms debounced
  over 3 cycles) at <= 1 false alarm per 1,000 healthy engine-cycles, the operating point of each fold set
  on the other folds' out-of-fold scores.
Targets (issue 25): RMSE <= 12.5, PHM08 <= 250, PR AUC >= 0.96, >= 98 % warned.

Run: .venv/bin/python bench/early_warning.py
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import average_precision_score
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import FunctionTransformer
from threadpoolctl import threadpool_limits

from mfd.modeling.lead_time import SCORE, lead_time
from mfd.modeling.rul import fit_rul_head
from mfd.profiles import MACHINE, TIMESTAMP, load
from mfd.profiles import cmapss_import as cmapss
from mfd.windows import STATS, WindowSpec, window_features

SUBSET = "FD001"
CAP = 125
HORIZON, LEAD, DEBOUNCE = 30, 15, 3  # cycles (1 cycle = 1 h in the cmapss profile)
FALSE_ALARMS_PER_1000 = 1.0
SEEDS = (0, 1, 2)
TARGETS = {"rmse": 12.5, "phm08": 250.0, "pr_auc": 0.96, "warned": 0.98}
PUBLISHED = [("SVR (published)", 20.96, 1380.0), ("deep LSTM (published)", 16.14, 338.0)]


def engines(split: str, profile_sensors: tuple[str, ...]) -> pd.DataFrame:
    """One row per engine and cycle: machine_id, timestamp, cycle, the 24 channels, `rul` (cycles left)."""
    _, parsed = cmapss.read_split(cmapss.DEFAULT_DIR, SUBSET, split)
    rows = [
        (cmapss.engine_name(SUBSET, split, e.unit), c, *map(float, v))
        for e in parsed.values()
        for c, v in zip(e.cycles, e.values, strict=True)
    ]
    frame = pd.DataFrame(rows, columns=[MACHINE, "cycle", *profile_sensors])
    frame[TIMESTAMP] = pd.Timestamp(cmapss.START) + pd.to_timedelta(frame["cycle"] - 1, unit="h")
    last = frame.groupby(MACHINE)["cycle"].transform("max")
    left = pd.Series(0, index=frame.index)
    if split == "test":
        rul_path = cmapss.read_rul(cmapss.DEFAULT_DIR, SUBSET, len(parsed))
        truth = [int(x) for x in rul_path.read_text().split()]
        names = [cmapss.engine_name(SUBSET, split, unit) for unit in parsed]
        left = frame[MACHINE].map(dict(zip(names, truth, strict=True)))
    frame["rul"] = left + last - frame["cycle"]
    return frame


def fit_predict(
    x_train: pd.DataFrame, y: np.ndarray, x_test: pd.DataFrame, seeds: tuple[int, ...]
) -> np.ndarray:
    """The baseline: plain HistGradientBoosting regressors on `y` (already capped), averaged over `seeds`."""
    with threadpool_limits(1):  # the host's cores are shared: OpenMP threads oversubscribe them
        models = [HistGradientBoostingRegressor(random_state=s).fit(x_train, y) for s in seeds]
        return np.mean([m.predict(x_test) for m in models], axis=0)


def head_predict(x_train: pd.DataFrame, rul: np.ndarray, x_test: pd.DataFrame) -> np.ndarray:
    """The platform's RUL head (mfd.modeling.rul) fit on `x_train` with cycles to failure `rul` (capped at
    CAP by the head), its estimates for `x_test`."""
    with threadpool_limits(1):
        head = fit_rul_head(FunctionTransformer(), x_train, rul, pd.Timedelta(hours=CAP))
        return head.predict(x_test)


def phm08(truth: np.ndarray, estimate: np.ndarray) -> float:
    d = estimate - truth
    return float(np.sum(np.where(d < 0, np.exp(-d / 13) - 1, np.exp(d / 10) - 1)))


def rmse(truth: np.ndarray, estimate: np.ndarray) -> float:
    return float(np.sqrt(np.mean((estimate - truth) ** 2)))


def warning_rate(frame: pd.DataFrame, estimate: np.ndarray, cutoff: float) -> tuple[int, int, float]:
    """Engines failing (observable), warned >= LEAD ahead, false alarms per 1,000 healthy engine-cycles,
    alarming when the estimated RUL is at or below `cutoff` for DEBOUNCE cycles."""
    readings = frame[[MACHINE, TIMESTAMP]].assign(**{SCORE: -estimate})
    failures = frame.loc[frame["rul"] == 0, [MACHINE, TIMESTAMP]]
    got = lead_time(
        readings,
        failures,
        threshold=-cutoff,
        horizon=pd.Timedelta(hours=HORIZON),
        lead=pd.Timedelta(hours=LEAD),
        k=DEBOUNCE,
    )
    return got.failures, got.warned, 1000 * got.false_alarms / (got.healthy_days * 24)


def operating_cutoff(frame: pd.DataFrame, estimate: np.ndarray) -> float:
    """The highest RUL cutoff (earliest alarms) with at most FALSE_ALARMS_PER_1000 on these engines."""
    for cutoff in np.arange(90.0, 4.0, -1.0):
        if warning_rate(frame, estimate, cutoff)[2] <= FALSE_ALARMS_PER_1000:
            return float(cutoff)
    return 0.0


def grouped_cv(train: pd.DataFrame, x: pd.DataFrame, y: np.ndarray) -> tuple[int, int, float, list[float]]:
    """Out-of-fold estimates (5 folds by engine), then per fold the cutoff set on the other folds."""
    folds = list(GroupKFold(n_splits=5).split(x, y, groups=train[MACHINE]))
    oof = np.zeros(len(train))
    for fit_rows, held_rows in folds:
        oof[held_rows] = head_predict(x.iloc[fit_rows], y[fit_rows], x.iloc[held_rows])
    failures = warned = 0
    false_alarms, cycles, cutoffs = 0.0, 0.0, []
    for _, held_rows in folds:
        others = np.setdiff1d(np.arange(len(train)), held_rows)
        cutoff = operating_cutoff(train.iloc[others], oof[others])
        cutoffs.append(cutoff)
        held = train.iloc[held_rows]
        n, w, rate = warning_rate(held, oof[held_rows], cutoff)
        healthy = float((held["rul"] > HORIZON).sum())
        failures, warned = failures + n, warned + w
        false_alarms, cycles = false_alarms + rate * healthy / 1000, cycles + healthy
    return failures, warned, 1000 * false_alarms / cycles, cutoffs


def baseline_columns(spec: WindowSpec) -> list[str]:
    return [c for c in spec.columns if "__mean_" in c or "__std_" in c]


def main() -> None:
    start = time.perf_counter()
    profile = load("cmapss")
    train, test = engines("train", profile.sensor_columns), engines("test", profile.sensor_columns)
    y = np.minimum(train["rul"].to_numpy(), CAP).astype(float)
    last = test.groupby(MACHINE)["cycle"].idxmax().sort_index().to_numpy()
    truth_last = test.loc[last, "rul"].to_numpy().astype(float)
    warn = (test["rul"] <= HORIZON).to_numpy()
    plain = WindowSpec.of(profile)
    x_plain = window_features(train, plain)[baseline_columns(plain)]
    base_all = fit_predict(x_plain, y, window_features(test, plain)[baseline_columns(plain)], (0,))
    varying = tuple(
        c for c in profile.sensor_columns if train[c].nunique() > 2 and not c.startswith("setting")
    )
    spec = WindowSpec.of(profile, sensors=varying, windows=(5, 15, 30, 60), baseline=30)
    x_train, x_test = window_features(train, spec), window_features(test, spec)
    rul = train["rul"].to_numpy().astype(float)
    ours_all = head_predict(x_train, rul, x_test)
    own = WindowSpec.of(profile)  # the profile's windows over all its channels (features.WINDOW_SPEC)
    profile_all = head_predict(window_features(train, own), rul, window_features(test, own))
    print(
        f"C-MAPSS {SUBSET}: {train[MACHINE].nunique()} train engines ({len(train)} cycles), "
        f"{test[MACHINE].nunique()} test engines ({len(test)} cycles); RUL capped at {CAP} for training"
    )
    print(
        f"mfd features: {len(spec.columns)} ({len(varying)} channels x windows {spec.windows} x "
        f"{'/'.join(STATS)} + age); baseline: {len(baseline_columns(plain))} rolling mean/std columns"
    )
    rows: list[tuple] = list(PUBLISHED)
    for name, estimate in (
        ("baseline HGB, rolling features", base_all),
        ("mfd, profile window features", profile_all),
        ("mfd window features + RUL head", ours_all),
    ):
        at_last = estimate[last]
        rows.append((name, rmse(truth_last, at_last), phm08(truth_last, at_last)))
        rows[-1] = (*rows[-1], average_precision_score(warn, -estimate))
    print("\nRUL at each test engine's last cycle (100 engines) | warning within 30 cycles, per test cycle")
    print(f"{'model':36s} {'RMSE':>7s} {'PHM08':>8s} {'PR AUC':>7s}")
    for row in rows:
        pr = f"{row[3]:7.4f}" if len(row) > 3 else f"{'':7s}"
        print(f"{row[0]:36s} {row[1]:7.2f} {row[2]:8.0f} {pr}")
        if row is rows[len(PUBLISHED) - 1]:
            print(f"{'best published':36s} {'11-12':>7s}")
    ours = rows[-1]
    failures, warned, rate, cutoffs = grouped_cv(train, x_train, y)
    print(
        f"\n5-fold grouped CV over the train engines (mfd model): {warned}/{failures} engines warned >= "
        f"{LEAD} cycles ahead = {warned / failures:.1%}, at {rate:.2f} false alarms per 1,000 healthy "
        f"engine-cycles (alarm: estimated RUL <= cutoff for {DEBOUNCE} cycles; cutoffs set on the other "
        f"folds: {', '.join(f'{c:g}' for c in cutoffs)})"
    )
    met = {
        "rmse": ours[1] <= TARGETS["rmse"],
        "phm08": ours[2] <= TARGETS["phm08"],
        "pr_auc": ours[3] >= TARGETS["pr_auc"],
        "warned": warned / failures >= TARGETS["warned"],
    }
    print(
        "\ntargets: " + "; ".join(f"{k} {TARGETS[k]:g}: {'met' if v else 'NOT met'}" for k, v in met.items())
    )
    print(f"bench took {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
