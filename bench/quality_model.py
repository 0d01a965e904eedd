"""Model quality on AI4I (sensors + physics features, no failure-mode columns), measured honestly, on the
clean rows and on the shifted ones a plant gives, plus the main job's wall time.

1. `candidate_model` with `auto` and the default config (robust objective, 60 s budget) on all 10,000 rows:
   wall and CPU time (target <= 60 s), budget vs spent per phase, the family table, the kept family, holdout scores clean and shifted
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
   (target <= 150 s) and, per step, Dagster's wall time and, for the budgeted steps (candidate_model,
   sequence_models, quality_scores), budget vs spent and CPU seconds. `--no-main-job` skips it.

Every timing is printed with the load average beside it. `--only auto main_job` times just parts 1 and 5
(a few minutes); `--only nested` the quality bars. Everything is recorded in an MLflow run (a SQLite store
in a temporary directory unless --tracking-uri).

    .venv/bin/python bench/quality_model.py [--only auto nested cross main_job] [--trials 5]
                                            [--nested-trials 3] [--family F] [--no-main-job] [--latency]
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import resource
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
from mfd.profiles.ai4i_reference import load_ai4i
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


def load() -> str:
    """`load 1.2 / 3.4 / 5.6` (1, 5, 15 min), printed beside every timing."""
    return "load " + " / ".join(f"{v:.1f}" for v in os.getloadavg())


def step_budgets(dagster_home: Path) -> pd.DataFrame:
    """One row per step of the main_job run in `dagster_home`: its wall seconds (Dagster's step stats) and,
    for the steps that report one, their budget, the seconds they counted themselves and their CPU."""
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        [run] = instance.get_runs(filters=dg.RunsFilter(job_name="main_job"), limit=1)
        rows = {}
        for stat in instance.get_run_step_stats(run.run_id):
            event = instance.get_latest_materialization_event(dg.AssetKey(stat.step_key))
            meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
            rows[stat.step_key] = {
                "wall_s": stat.end_time - stat.start_time,
                **{k: meta[k].value for k in ("budget_s", "spent_s", "cpu_s") if k in meta},
            }
            if "budget" in meta:  # the step's phases, in the order they ran
                phases = {r.data["phase"]: r.data["spent_s"] for r in meta["budget"].value.records}
                rows[stat.step_key]["phases"] = ", ".join(
                    f"{name} {seconds:.1f}" for name, seconds in phases.items() if name != "step"
                )
    return pd.DataFrame(rows).T.sort_values("wall_s", ascending=False)


def main_job(rows: int) -> dict[str, object]:
    """`python -m mfd_assets.main --rows <rows>` in a throw-away MFD_HOME: the wall time of each phase it
    prints, the command's CPU seconds, and main_job's steps with their budgets (`step_budgets`)."""
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
    before, cpu = load(), resource.getrusage(resource.RUSAGE_CHILDREN)
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
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    steps = [float(m) for m in re.findall(r"\(([0-9.]+) s\)", out.stdout)]
    if out.returncode:
        print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
        if len(steps) < 3:  # failed before main_job finished: nothing to report
            raise SystemExit(f"main job failed ({out.returncode})")
        print(f"(the command failed with {out.returncode} after main_job; its times are still reported)")
    table = step_budgets(dagster_home)
    shutil.rmtree(home, ignore_errors=True)
    return {
        "generate_s": steps[0],
        "ingest_s": steps[1],
        "main_job_s": steps[2],
        "whole_command_s": total,
        "whole_command_cpu_s": (after.ru_utime + after.ru_stime) - (cpu.ru_utime + cpu.ru_stime),
        "load_before": before,
        "load_after": load(),
        "steps": table,
    }


def budget_lines(table: pd.DataFrame) -> str:
    """`step: wall 58.2 s, budget 60 s, spent 57.9 s, CPU 80.1 s` for each step that has a budget."""
    lines = []
    for step, row in table.iterrows():
        if "budget_s" in row and pd.notna(row["budget_s"]):
            verdict = "within" if row["spent_s"] <= row["budget_s"] else "OVER"
            lines.append(
                f"  {step}: budget {row['budget_s']:g} s, spent {row['spent_s']:.1f} s ({verdict}), "
                f"Dagster step wall {row['wall_s']:.1f} s, CPU {row['cpu_s']:.1f} s; {row['phases']}"
            )
    return "\n".join(lines)


def _verdict(values: dict[str, float], bar: dict[str, float]) -> str:
    met = all(values[k] >= v for k, v in bar.items())
    return (
        ("MET" if met else "NOT MET")
        + " ("
        + ", ".join(f"{k} {values[k]:.4f} >= {v}" for k, v in bar.items())
        + ")"
    )


PARTS: tuple[str, ...] = ("auto", "nested", "cross", "main_job")


def run_auto(df: pd.DataFrame, args: argparse.Namespace) -> tuple[object, dict[str, float]]:
    """Part 1: `candidate_model`'s training with `auto` on all rows; prints its budget vs spent."""
    before, wall, cpu = load(), time.perf_counter(), time.process_time()
    candidate = train_candidate(
        df, family="auto", folds=5, trials=args.trials, seed=args.seed, time_budget_s=args.budget
    )
    auto_wall, auto_cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        f"candidate_model auto, 5 folds x {args.trials} trials, budget {args.budget:g} s, 10,000 rows: "
        f"{auto_wall:.1f} s wall (target <= 60 s), {auto_cpu:.1f} s CPU; {before} -> {load()}"
    )
    print(f"  budget vs spent: auto {candidate.spent.line()}")
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
    return candidate, {"auto_wall_s": auto_wall, "auto_cpu_s": auto_cpu, **lat}


def run_nested(df: pd.DataFrame, args: argparse.Namespace, robustness: Robustness) -> dict[str, float]:
    """Parts 2 and 3: nested CV of `auto` (or `--family`) beside the references, with the bars."""
    family = args.family or "auto"
    before, started, cpu = load(), time.perf_counter(), time.process_time()
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
    print(
        f"\nnested CV ({family}): 5 outer folds x (3 inner folds x {args.nested_trials} trials), "
        f"{time.perf_counter() - started:.0f} s wall, {time.process_time() - cpu:.0f} s CPU; {before} -> {load()}"
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
    mlflow.log_text(table.round(4).to_markdown(), "quality.md")
    return {
        **{f"nested_{k}": float(v) for k, v in honest.items()},
        **{
            f"ref_{m.split('(')[0].strip().lower()}_{k}": float(v)
            for m, row in refs[columns].iterrows()
            for k, v in row.items()
        },
    }


def run_main_job() -> dict[str, float]:
    """Part 5: main_job on 20,000 generated readings, every step's wall time and budget vs spent."""
    timing = main_job(20_000)
    table = timing.pop("steps")
    print(
        f"\nmain_job on 20,000 generated readings: {timing['main_job_s']:.1f} s wall (target <= 150 s); "
        f"whole command {timing['whole_command_s']:.1f} s wall, {timing['whole_command_cpu_s']:.1f} s CPU "
        f"(generate {timing['generate_s']:.1f} s, ingest {timing['ingest_s']:.1f} s, then detection); "
        f"{timing['load_before']} -> {timing['load_after']}"
    )
    print("budget vs spent per step (spent: the step's own count, from its start to its metadata):")
    print(budget_lines(table))
    shown = table.drop(columns=["phases"], errors="ignore")
    print(shown.astype(float).round(1).to_markdown())
    mlflow.log_text(table.to_markdown(), "main_job_steps.md")
    return {k: v for k, v in timing.items() if isinstance(v, float)} | {
        f"step_{step}_wall_s": float(row["wall_s"]) for step, row in table.iterrows()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5, help="optuna trials per family in the auto run")
    parser.add_argument("--nested-trials", type=int, default=3, help="trials per outer fold in nested CV")
    parser.add_argument("--family", help="nested-CV this one family (default: auto inside every outer fold)")
    parser.add_argument("--budget", type=float, default=60.0, help="auto's time budget, s (asset default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only",
        nargs="+",
        choices=PARTS,
        default=list(PARTS),
        help="run only these parts (quick timing: --only auto main_job)",
    )
    parser.add_argument("--no-main-job", action="store_true", help="skip the main job measurement")
    parser.add_argument(
        "--latency", action="store_true", help="also the flat-walk crossover and every family's latency"
    )
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite in a temp dir)")
    args = parser.parse_args()
    parts = [p for p in args.only if not (p == "main_job" and args.no_main_job)]
    robustness = Robustness()

    df = load_ai4i()
    print(f"AI4I: {len(df)} rows, {int(df[LABEL_COLUMN].sum())} failures; 2-core figures, {load()}")
    print(f"objective {robustness.objective}, noise {robustness.noise}; parts: {', '.join(parts)}\n")

    tmp = tempfile.mkdtemp(prefix="mfd-bench-mlflow-")
    uri = args.tracking_uri or f"sqlite:///{Path(tmp) / 'mlflow.db'}"
    metrics: dict[str, float] = {}
    candidate = None
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench-quality-model")
    with mlflow.start_run(run_name=f"quality-{args.family or 'auto'}") as run:
        mlflow.log_params(
            {
                "family": args.family or "auto",
                "trials": args.trials,
                "nested_trials": args.nested_trials,
                "budget_s": args.budget,
                "seed": args.seed,
                "parts": ",".join(parts),
                **robustness.record(),
            }
        )
        if "auto" in parts:
            candidate, measured = run_auto(df, args)
            metrics |= measured | {f"holdout_{k}": v for k, v in candidate.holdout_scores.items()}
            mlflow.log_param("kept_by_auto", candidate.family)
        if "nested" in parts:
            metrics |= run_nested(df, args, robustness)
        if "cross" in parts:
            kept = (
                (candidate.family, candidate.params) if candidate else ("blend", FAMILIES["blend"].reference)
            )
            cross = cross_source(*kept, robustness, args.seed)
            print("\ncross-source (train -> score), at 0.5:")
            print(cross.round(4).to_markdown())
            mlflow.log_text(cross.round(4).to_markdown(), "cross_source.md")
        if "main_job" in parts:
            metrics |= run_main_job()
        mlflow.log_metrics(metrics)
    print(f"recorded in MLflow run {run.info.run_id} ({uri})")


if __name__ == "__main__":
    main()
