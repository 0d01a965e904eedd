"""Model quality on AI4I (sensors + physics features, no failure-mode columns), measured honestly.

1. `candidate_model` with `auto` and the default trials on all 10,000 rows: wall and CPU time (target
   <= 120 s on 2 cores), the family it keeps, and its in-process latency (targets: <= 1 ms for a batch of
   one, <= 50 ms for 10,000 rows), the flat tree walk against scikit-learn by batch size (where the
   FlatTreeClassifier cutoff sits), and the same latency for every family's reference configuration.
2. Stratified 5-fold nested CV of `auto`: every outer fold picks the family, tunes it (optuna, inner 3-fold)
   and picks its threshold on its own training rows only, then scores the rows no trial saw. `--family F`
   nested-CVs one family instead.
3. Baseline measured in the same run: the seeds' RandomForest(300 trees), plain 5-fold at threshold 0.5.

Everything is printed against the README reference scores and recorded in an MLflow run (a SQLite store in a
temporary directory unless --tracking-uri is given).

    .venv/bin/python bench/quality_model.py [--trials 5] [--nested-trials 3] [--family F]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import StratifiedKFold

from mfd.features import feature_array, feature_matrix
from mfd.modeling.candidate import train_candidate
from mfd.modeling.families import FAMILIES
from mfd.modeling.metrics import latency, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.modeling.tree_predictor import MAX_FLAT_ROWS, FlatTreeClassifier
from mfd.modeling.tuning import nested_cv
from mfd.reference import load_ai4i
from mfd.schema import LABEL_COLUMN

# mfd/data/README.md: stratified 5-fold, 2 cores, sensors + physics features, no mode columns.
REFERENCE = pd.DataFrame(
    {"roc_auc": [0.981, 0.976], "pr_auc": [0.888, 0.902], "f1": [0.851, 0.887], "fit_s": [0.29, 2.39]},
    index=["README HistGradientBoosting", "README RandomForest (300 trees)"],
)
BAR = {"roc_auc": 0.98, "pr_auc": 0.89}


def baseline(df: pd.DataFrame, seed: int) -> dict[str, float]:
    """The seeds' model: RandomForest(300), stratified 5-fold, scores at 0.5, mean over folds."""
    x, y = feature_matrix(df), df[LABEL_COLUMN].astype("int64").to_numpy()
    rows = []
    for train, test in StratifiedKFold(5, shuffle=True, random_state=seed).split(x, y):
        started = time.perf_counter()
        model = RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=-1).fit(
            x.iloc[train], y[train]
        )
        fit_s = time.perf_counter() - started
        rows.append({**scores(y[test], model.predict_proba(x.iloc[test])[:, 1], 0.5), "fit_s": fit_s})
    return pd.DataFrame(rows).mean().to_dict()


def family_latency(df: pd.DataFrame, seed: int) -> pd.DataFrame:
    """In-process latency (medians, ms) of each family's reference configuration fit on all rows."""
    x, y = df[list(MODEL_INPUT_COLUMNS)], df[LABEL_COLUMN].astype("int64").to_numpy()
    rows = {
        f: latency(build_pipeline(FAMILIES[f].make(FAMILIES[f].reference, seed)).fit(x, y), df)
        for f in FAMILIES
    }
    return pd.DataFrame(rows).T


def median_ms(predict: object, x: np.ndarray, repeats: int = 20) -> float:
    """Median ms of `predict(x)` over `repeats` calls after one warm-up call."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times[1:]))


def flat_crossover(model: FlatTreeClassifier, df: pd.DataFrame) -> pd.DataFrame:
    """Median ms of the flat walk and of scikit-learn (as the wrapper calls it) per batch size."""
    x = feature_array(df)
    sklearn_only = copy.copy(model).set_params(max_flat_rows=0)
    return pd.DataFrame(
        {
            f"{n} rows": {
                "flat walk": median_ms(model.flat_.predict_proba, x[:n]),
                "scikit-learn": median_ms(sklearn_only.predict_proba, x[:n]),
            }
            for n in (1, 16, 64, 256, 1024)
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="optuna trials per family in the auto run")
    parser.add_argument("--nested-trials", type=int, default=3, help="trials per outer fold in nested CV")
    parser.add_argument("--family", help="nested-CV this one family (default: auto inside every outer fold)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in a temp dir)")
    args = parser.parse_args()

    df = load_ai4i()
    print(f"AI4I: {len(df)} rows, {int(df[LABEL_COLUMN].sum())} failures; 2-core figures, shared machine\n")

    wall, cpu = time.perf_counter(), time.process_time()
    candidate = train_candidate(df, family="auto", folds=5, trials=args.trials, seed=args.seed)
    auto_wall, auto_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"candidate_model auto, 5 folds x {args.trials} trials, 10,000 rows: {auto_wall:.1f} s wall, "
        f"{auto_cpu:.1f} s CPU (target <= 120 s wall)"
    )
    print(candidate.families.round(4).to_markdown())
    print(
        f"kept: {candidate.family} {candidate.params}; holdout (20 %, never tuned on): "
        + ", ".join(f"{k} {v:.4f}" for k, v in candidate.holdout_scores.items())
    )
    lat = candidate.latency
    print(
        f"latency in-process: {lat['latency_row_ms']:.3f} ms batch-of-one (target <= 1 ms), "
        f"{lat['latency_10k_ms']:.1f} ms per 10k rows (target <= 50 ms)"
    )
    model = candidate.pipeline.named_steps["model"]
    if isinstance(model, FlatTreeClassifier):
        print(f"flat walk vs scikit-learn by batch size, ms (cutoff: flat up to {MAX_FLAT_ROWS} rows):")
        print(flat_crossover(model, df).round(3).to_markdown())
    per_family = family_latency(df, args.seed)
    print("latency of each family's reference configuration (medians, ms):")
    print(per_family.round(3).to_markdown() + "\n")

    family = args.family or "auto"
    started = time.perf_counter()
    folds = nested_cv(
        df, family=family, outer_folds=5, inner_folds=3, trials=args.nested_trials, seed=args.seed
    )
    nested_s = time.perf_counter() - started
    print(
        f"nested CV ({family}): 5 outer folds x (3 inner folds x {args.nested_trials} trials), {nested_s:.0f} s"
    )
    print(folds.round(4).to_markdown())
    honest = folds[["roc_auc", "pr_auc", "f1", "fit_s"]].mean()
    base = baseline(df, args.seed)
    table = pd.concat(
        [
            REFERENCE,
            pd.DataFrame(
                [honest.to_dict(), {k: base[k] for k in ("roc_auc", "pr_auc", "f1", "fit_s")}],
                index=[f"champion {family} (nested, outer folds)", "baseline RF(300) @0.5, this run"],
            ),
        ]
    )
    print("\n" + table.round(4).to_markdown())
    verdict = all(honest[k] >= v for k, v in BAR.items())
    print(
        f"\nquality bar ROC AUC >= 0.98 and PR AUC >= 0.89: {'MET' if verdict else 'NOT MET'} "
        f"(ROC AUC {honest['roc_auc']:.4f}, PR AUC {honest['pr_auc']:.4f}); "
        f"PR AUC vs baseline x{honest['pr_auc'] / base['pr_auc']:.3f}, F1 vs baseline x{honest['f1'] / base['f1']:.3f}"
    )

    tmp = tempfile.mkdtemp(prefix="mfd-bench-mlflow-")
    mlflow.set_tracking_uri(args.tracking_uri or f"sqlite:///{Path(tmp) / 'mlflow.db'}")
    mlflow.set_experiment("bench-quality-model")
    with mlflow.start_run(run_name=f"quality-{family}") as run:
        mlflow.log_params(
            {
                "family": family,
                "kept_by_auto": candidate.family,
                "trials": args.trials,
                "nested_trials": args.nested_trials,
                "seed": args.seed,
            }
        )
        mlflow.log_metrics(
            {
                **{f"nested_{k}": float(v) for k, v in honest.items()},
                **{f"nested_{k}_std": float(folds[k].std()) for k in ("roc_auc", "pr_auc", "f1")},
                **{f"baseline_{k}": float(v) for k, v in base.items()},
                **{f"holdout_{k}": v for k, v in candidate.holdout_scores.items()},
                "auto_wall_s": auto_wall,
                "auto_cpu_s": auto_cpu,
                **lat,
                "quality_bar_met": float(verdict),
            }
        )
        mlflow.log_text(table.round(4).to_markdown(), "quality.md")
    print(f"recorded in MLflow run {run.info.run_id} ({mlflow.get_tracking_uri()})")


if __name__ == "__main__":
    main()
