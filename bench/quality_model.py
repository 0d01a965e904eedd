"""Model quality on AI4I (sensors + physics features, no failure-mode columns), measured honestly, on the
clean rows and on the shifted ones a plant gives, plus the main job's wall time.

1. `candidate_model` with `auto` and the default config (robust objective, 60 s budget) on all 10,000 rows:
   wall and CPU time (target <= 60 s), the family table, the kept family, holdout scores clean and shifted
   (noise, label noise, cross-source), Brier before/after calibration, in-process latency.
2. Stratified 5-fold nested CV of `auto`: every outer fold picks the family, tunes it (optuna, inner 3-fold,
   robust objective on clean + noisy inner validation folds) and picks its threshold on its own training rows
   only, then scores the outer-test rows, clean and with the default measurement noise (targets: clean ROC AUC
   >= 0.98, PR AUC >= 0.88; noisy PR AUC >= 0.65, ROC AUC >= 0.965). `--family F` nested-CVs one family.
3. References measured in the same run on the same outer folds and the same noise: RandomForest(300) and
   HistGradientBoosting (defaults) at threshold 0.5.
4. Cross-source, both directions (train AI4I -> score the generator's fleet and back) for the kept
   configuration beside the same two references.
5. `main_job` (`python -m mfd_assets.main`, 20,000 generated readings, a throw-away MFD_HOME): its wall time
   (target <= 150 s) and `candidate_model`'s own (target <= 60 s). `--no-main-job` skips it.

Everything is recorded in an MLflow run (a SQLite store in a temporary directory unless --tracking-uri).

    .venv/bin/python bench/quality_model.py [--trials 5] [--nested-trials 3] [--family F] [--no-main-job]
                                            [--latency]
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.model_selection import StratifiedKFold

from mfd.features import feature_array, feature_matrix
from mfd.modeling.candidate import train_candidate
from mfd.modeling.families import FAMILIES
from mfd.modeling.metrics import latency, scores
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS, build_pipeline
from mfd.modeling.robust import Robustness
from mfd.modeling.shifts import CrossSource, cross_sources
from mfd.modeling.training_data import labelled
from mfd.modeling.tree_predictor import MAX_FLAT_ROWS, FlatTreeClassifier
from mfd.modeling.tuning import fit_pipeline, nested_cv
from mfd.reference import load_ai4i
from mfd.schema import LABEL_COLUMN

ROOT = Path(__file__).resolve().parents[1]
CLEAN_BAR = {"roc_auc": 0.98, "pr_auc": 0.88}
NOISY_BAR = {"noisy_roc_auc": 0.965, "noisy_pr_auc": 0.65}
REFERENCES = {
    "RF(300)": lambda seed: RandomForestClassifier(n_estimators=300, random_state=seed, n_jobs=2),
    "HGB (defaults)": lambda seed: HistGradientBoostingClassifier(early_stopping=False, random_state=seed),
}


def references(df: pd.DataFrame, robustness: Robustness, seed: int) -> pd.DataFrame:
    """Each reference model on the nested CV's outer folds, clean and with the same noise, at 0.5."""
    data = labelled(df)
    y = data[LABEL_COLUMN].to_numpy()
    rows = []
    for name, make in REFERENCES.items():
        for fold, (train, test) in enumerate(
            StratifiedKFold(5, shuffle=True, random_state=seed).split(data, y)
        ):
            started = time.perf_counter()
            model = make(seed).fit(feature_matrix(data.iloc[train]), y[train])
            fit_s = time.perf_counter() - started
            held = data.iloc[test]
            noisy = robustness.noise.apply(held, seed=robustness.noise.seed + fold)
            clean_p = model.predict_proba(feature_matrix(held))[:, 1]
            noisy_p = model.predict_proba(feature_matrix(noisy))[:, 1]
            rows.append(
                {
                    "model": name,
                    **scores(y[test], clean_p, 0.5),
                    **{f"noisy_{k}": v for k, v in scores(y[test], noisy_p, 0.5).items()},
                    "fit_s": fit_s,
                }
            )
    return pd.DataFrame(rows).groupby("model", sort=False).mean()


def cross_source(family: str, params: dict, robustness: Robustness, seed: int) -> pd.DataFrame:
    """PR / ROC AUC of the kept configuration and the references, trained on one source, scored on the
    other (the cross-source holdout's samples: 5,000 AI4I rows and 5,000 generated readings)."""
    sources = cross_sources(CrossSource())
    rows = {}
    for train, test in (("ai4i", "fleet"), ("fleet", "ai4i")):
        target = sources[test]
        y = target[LABEL_COLUMN].astype("int64").to_numpy()
        fitted = {f"kept {family}": fit_pipeline(family, params, sources[train], seed, robustness)}
        for name, make in REFERENCES.items():
            src = sources[train]
            fitted[name] = build_pipeline(make(seed)).fit(
                src[list(MODEL_INPUT_COLUMNS)], src[LABEL_COLUMN].astype("int64").to_numpy()
            )
        for name, model in fitted.items():
            proba = model.predict_proba(target[list(MODEL_INPUT_COLUMNS)])[:, 1]
            s = scores(y, proba, 0.5)
            rows[(name, f"{train}->{test}")] = {"pr_auc": s["pr_auc"], "roc_auc": s["roc_auc"]}
    return pd.DataFrame(rows).T.unstack()


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


def main_job(rows: int) -> dict[str, float]:
    """`python -m mfd_assets.main --rows <rows>` in a throw-away MFD_HOME: the wall time of each step it
    prints, and candidate_model's `train_seconds` from the run it logged to MLflow."""
    home = Path(tempfile.mkdtemp(prefix="mfd-bench-home-"))
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(
        (ROOT / "dagster.yaml").read_text().replace("base_dir: .mfd/dagster", f"base_dir: {dagster_home}")
    )
    env = {
        **os.environ,
        "MFD_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "BENTOML_HOME": str(home / "bentoml"),
    }
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "mfd_assets.main", "--rows", str(rows)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    total = time.perf_counter() - started
    steps = [float(m) for m in re.findall(r"\(([0-9.]+) s\)", out.stdout)]
    if out.returncode:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
        if len(steps) < 3:  # failed before main_job finished: nothing to report
            raise SystemExit(f"main job failed ({out.returncode})")
        print(f"(the command failed with {out.returncode} after main_job; its times are still reported)")
    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True)
    seconds = runs["metrics.train_seconds"].dropna() if "metrics.train_seconds" in runs else []
    candidate_s = float(seconds.iloc[0]) if len(seconds) else float("nan")
    shutil.rmtree(home, ignore_errors=True)
    return {
        "generate_s": steps[0],
        "ingest_s": steps[1],
        "main_job_s": steps[2],
        "candidate_model_s": candidate_s,
        "whole_command_s": total,
    }


def _verdict(values: dict[str, float], bar: dict[str, float]) -> str:
    met = all(values[k] >= v for k, v in bar.items())
    return (
        ("MET" if met else "NOT MET")
        + " ("
        + ", ".join(f"{k} {values[k]:.4f} >= {v}" for k, v in bar.items())
        + ")"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="optuna trials per family in the auto run")
    parser.add_argument("--nested-trials", type=int, default=3, help="trials per outer fold in nested CV")
    parser.add_argument("--family", help="nested-CV this one family (default: auto inside every outer fold)")
    parser.add_argument("--budget", type=float, default=60.0, help="auto's time budget, s (asset default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-main-job", action="store_true", help="skip the main job measurement")
    parser.add_argument(
        "--latency", action="store_true", help="also the flat-walk crossover and every family's latency"
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in a temp dir)")
    args = parser.parse_args()
    robustness = Robustness()

    df = load_ai4i()
    print(f"AI4I: {len(df)} rows, {int(df[LABEL_COLUMN].sum())} failures; 2-core figures, shared machine")
    print(f"objective {robustness.objective}, noise {robustness.noise}\n")

    wall, cpu = time.perf_counter(), time.process_time()
    candidate = train_candidate(
        df, family="auto", folds=5, trials=args.trials, seed=args.seed, time_budget_s=args.budget
    )
    auto_wall, auto_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"candidate_model auto, 5 folds x {args.trials} trials, budget {args.budget:g} s, 10,000 rows: "
        f"{auto_wall:.1f} s wall, {auto_cpu:.1f} s CPU (target <= 60 s wall)"
    )
    print(candidate.families.round(4).to_markdown())
    print(
        f"kept: {candidate.family} {candidate.params}; holdout (20 %, never tuned on): "
        + ", ".join(f"{k} {v:.4f}" for k, v in candidate.holdout_scores.items())
    )
    print("holdouts, kept family (clean, shifted):")
    kept = candidate.shifted[candidate.shifted["family"] == candidate.family].set_index("shift")
    print(kept.drop(columns=["family"]).round(4).to_markdown())
    cal = candidate.calibration
    print(
        f"calibration {cal['method']}: holdout Brier {cal['holdout_brier_uncalibrated']:.5f} -> "
        f"{cal['holdout_brier']:.5f}"
    )
    lat = candidate.latency
    print(
        f"latency in-process: {lat['latency_row_ms']:.3f} ms batch-of-one (target <= 1 ms), "
        f"{lat['latency_10k_ms']:.1f} ms per 10k rows (target <= 50 ms)"
    )
    model = candidate.pipeline.named_steps["model"]
    model = getattr(model, "model", model)
    if args.latency and isinstance(model, FlatTreeClassifier):
        print(f"flat walk vs scikit-learn by batch size, ms (cutoff: flat up to {MAX_FLAT_ROWS} rows):")
        print(flat_crossover(model, df).round(3).to_markdown())
    if args.latency:
        print("latency of each family's reference configuration (medians, ms):")
        print(family_latency(df, args.seed).round(3).to_markdown() + "\n")

    family = args.family or "auto"
    started = time.perf_counter()
    folds = nested_cv(
        df,
        family=family,
        outer_folds=5,
        inner_folds=3,
        trials=args.nested_trials,
        seed=args.seed,
        robustness=robustness,
        time_budget_s=args.budget,
    )
    nested_s = time.perf_counter() - started
    print(
        f"nested CV ({family}): 5 outer folds x (3 inner folds x {args.nested_trials} trials), {nested_s:.0f} s"
    )
    print(folds.round(4).to_markdown())
    columns = ["roc_auc", "pr_auc", "f1", "noisy_roc_auc", "noisy_pr_auc", "noisy_f1", "fit_s"]
    honest = folds[columns].mean()
    refs = references(df, robustness, args.seed)
    table = pd.concat(
        [pd.DataFrame([honest.to_dict()], index=[f"champion {family} (nested, outer folds)"]), refs[columns]]
    )
    print("\nsame outer folds, clean and with the default measurement noise (references at 0.5):")
    print(table.round(4).to_markdown())
    print(f"\nclean bar: {_verdict(honest.to_dict(), CLEAN_BAR)}")
    print(f"noisy bar: {_verdict(honest.to_dict(), NOISY_BAR)}")

    cross = cross_source(candidate.family, candidate.params, robustness, args.seed)
    print("\ncross-source (train -> score), at 0.5:")
    print(cross.round(4).to_markdown())

    timing = {}
    if not args.no_main_job:
        timing = main_job(20_000)
        print(
            f"\nmain_job on 20,000 generated readings: {timing['main_job_s']:.1f} s (target <= 150 s); "
            f"candidate_model (auto) inside it: {timing['candidate_model_s']:.1f} s (target <= 60 s); "
            f"generate {timing['generate_s']:.1f} s, ingest {timing['ingest_s']:.1f} s"
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
                "budget_s": args.budget,
                "seed": args.seed,
                **robustness.record(),
                **{f"shift_{k}": v for k, v in candidate.shifts.record().items()},
            }
        )
        mlflow.log_metrics(
            {
                **{f"nested_{k}": float(v) for k, v in honest.items()},
                **{
                    f"ref_{m.split('(')[0].strip().lower()}_{k}": float(v)
                    for m, row in refs[columns].iterrows()
                    for k, v in row.items()
                },
                **{f"holdout_{k}": v for k, v in candidate.holdout_scores.items()},
                "auto_wall_s": auto_wall,
                "auto_cpu_s": auto_cpu,
                **lat,
                **timing,
            }
        )
        mlflow.log_text(table.round(4).to_markdown(), "quality.md")
        mlflow.log_text(cross.round(4).to_markdown(), "cross_source.md")
    print(f"recorded in MLflow run {run.info.run_id} ({mlflow.get_tracking_uri()})")


if __name__ == "__main__":
    main()
