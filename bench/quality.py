"""Benchmark: the whole quality_scores computation on the 10,000 AI4I rows with the default grids.

Builds raw / cleaned / GAN / SMOTE / corruption training sets (outside the timed part), then times
`mfd.quality.panel.run_panel` (parallel CV fits, subsampled SVC and KNN) against a seeds-style naive loop that
refits every grid point on every fold one after another, on the full training set, without parallelism.
Both score on the same holdout. Run: .venv/bin/python bench/quality.py [--naive-sets raw,cleaned,...]
"""

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd
import psutil
from sklearn.base import clone
from sklearn.metrics import average_precision_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold

from mfd.augmentation.corruption import corruption_augment
from mfd.augmentation.gan import gan_augment
from mfd.augmentation.oversampling import smote_augment
from mfd.features import add_physics
from mfd.modeling.holdout import holdout_split, without_holdout
from mfd.preparation.training_set import remove_outliers_iqr
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.quality.panel import PanelConfig, pipeline, run_panel, scores_of, xy

BUDGET_S = 90.0


def cpu_seconds() -> float:
    """CPU time of this process plus its live children (the joblib workers), user + system."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def naive_panel(
    train_sets: dict[str, pd.DataFrame], holdout: pd.DataFrame, config: PanelConfig
) -> pd.DataFrame:
    """The seeds' way: for each set, classifier, grid point and fold, fit sequentially on all rows."""
    hx, hy = xy(holdout)
    rows = []
    for dataset, train in train_sets.items():
        x, y = xy(train)
        folds = list(StratifiedKFold(config.folds, shuffle=True, random_state=config.seed).split(x, y))
        for name in config.classifiers:
            grid = {f"model__{k}": v for k, v in config.grids[name].items()}
            best, best_score = None, -np.inf
            for params in ParameterGrid(grid):
                model = pipeline(name, config.seed).set_params(**params)
                cv = [
                    average_precision_score(y[te], scores_of(clone(model).fit(x[tr], y[tr]), x[te]))
                    for tr, te in folds
                ]
                if np.mean(cv) > best_score:
                    best, best_score = model, float(np.mean(cv))
            best.fit(x, y)
            rows.append(
                {
                    "dataset": dataset,
                    "classifier": name,
                    "pr_auc": average_precision_score(hy, scores_of(best, hx)),
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--naive-sets", default="raw,cleaned,gan,oversampling,corruption")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    df = add_physics(load_ai4i())
    df.insert(0, "id", np.arange(1, len(df) + 1, dtype="int64"))
    split = holdout_split(df, 0.2, seed=0)
    held = frozenset(int(i) for i in split.holdout["id"])
    cleaned = without_holdout(remove_outliers_iqr(df)[0], held)
    started = time.perf_counter()
    sets = {
        "raw": split.train,
        "cleaned": cleaned,
        "gan": gan_augment(split.train)[0],
        "oversampling": smote_augment(split.train),
        "corruption": corruption_augment(split.train),
    }
    print(f"augmented sets built in {time.perf_counter() - started:.1f} s")
    print("training rows: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))

    # The default grids and settings, with no time budget so that every grid search runs to the end.
    config = PanelConfig(time_budget_s=float("inf"))
    started, cpu = time.perf_counter(), cpu_seconds()
    table = run_panel(sets, split.holdout, config)
    panel_s, panel_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    print(f"\nquality panel (8 classifiers x {len(sets)} sets, default grids, n_jobs={config.n_jobs}):")
    print(f"  {panel_s:.1f} s wall (target <= {BUDGET_S:.0f} s: {'OK' if panel_s <= BUDGET_S else 'OVER'})")
    print(
        f"  {panel_cpu:.1f} CPU s in this process and its workers; load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"  {int(table['note'].str.startswith('failed').sum())} grid searches failed to fit")
    print(f"  subsampled: {dict(config.max_train_rows)}")
    naive_names = [s for s in args.naive_sets.split(",") if s]
    on_subset = table[table["dataset"].isin(naive_names)]
    optimized_subset_s = float(on_subset["search_s"].sum() + on_subset["predict_s"].sum())
    started, cpu = time.perf_counter(), cpu_seconds()
    naive = naive_panel({k: sets[k] for k in naive_names}, split.holdout, config)
    naive_s, naive_cpu = time.perf_counter() - started, cpu_seconds() - cpu
    print(f"\nnaive sequential loop on {naive_names}: {naive_s:.1f} s wall, {naive_cpu:.1f} CPU s")
    print(f"  optimized panel on the same sets: {optimized_subset_s:.1f} s")
    print(f"  speedup: {naive_s / optimized_subset_s:.2f}x")
    merged = table.merge(naive, on=["dataset", "classifier"], suffixes=("", "_naive"))
    print(
        f"  mean |PR AUC difference| optimized vs naive: {(merged['pr_auc'] - merged['pr_auc_naive']).abs().mean():.3f}"
    )
    print("\n" + table.pivot(index="classifier", columns="dataset", values="pr_auc").round(3).to_markdown())


if __name__ == "__main__":
    main()
