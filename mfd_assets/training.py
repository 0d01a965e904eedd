"""Training: the shared holdout, a tuned candidate logged to MLflow, the gated champion in the model
registry, and sequence models on per-machine windows (logged for comparison only: the champion stays a
one-reading model)."""

import dagster as dg
import pandas as pd
from pydantic import Field

from mfd.alerts.costs import parse_cost_matrix
from mfd.modeling.budget import Deadline, Spent
from mfd.modeling.calibration import CALIBRATIONS
from mfd.modeling.candidate import Candidate, train_candidate
from mfd.modeling.experiment import (
    LOG_RESERVE_S,
    LoggedCandidate,
    calibration_figure,
    confusion_figure,
    lead_figure,
    log_candidate,
    pr_curve_figure,
    shift_figure,
)
from mfd.modeling.families import FAMILY_CHOICES
from mfd.modeling.holdout import holdout_split, honest_training_rows, time_honest, without_holdout
from mfd.modeling.metrics import METRICS
from mfd.modeling.model_io import CHAMPION, load_version
from mfd.modeling.robust import OBJECTIVES, Robustness
from mfd.modeling.sequence.architectures import ARCHITECTURES
from mfd.modeling.sequence.experiment import (
    SEQUENCE_FINISH_RESERVE_S,
    SEQUENCE_LOG_RESERVE_S,
    SequenceRuns,
    pr_curves_figure,
)
from mfd.modeling.sequence.models import (
    SequenceSettings,
    check_architectures,
    comparison_table,
    train_sequence_model,
)
from mfd.modeling.sequence.windows import split_windows
from mfd.modeling.shifts import CrossSource, LabelNoise, NoiseLevels, ShiftConfig, cross_source_applies
from mfd.modeling.training_data import data_version
from mfd.plots import png_markdown
from mfd.preparation.labels import LABELLED_READINGS_TAG, label_window
from mfd.preparation.training_set import DEFAULT_LABEL_WINDOW
from mfd.registry.replay import Replay, logged_model, replay_figure, replay_models
from mfd.registry.shadow_evidence import BLOCK, ON_INSUFFICIENT, ShadowGate
from mfd.schema import LABEL_COLUMN, PROFILE
from mfd_assets.metadata import rounded
from mfd_assets.metadata import table as table_metadata
from mfd_resources import ReadingsStore, Tracking

GROUP = "training"


class HoldoutConfig(dg.Config):
    fraction: float = Field(0.2, description="Share of training_set rows held out for scoring.")
    seed: int = Field(0, description="Seed of the stratified split (by reading id).")


class JitterConfig(dg.Config):
    """Noise-jittered copies of the training rows in every fit (`mfd.modeling.robust`)."""

    copies: int = Field(
        0,
        description="Noise-jittered copies of the training rows added to every fit of every family (0: none; "
        "the `blend` family jitters its robust half itself).",
    )
    scale: float = Field(1.0, description="Jitter noise as a multiple of the measurement-noise levels.")


class NoiseConfig(dg.Config):
    """The measurement noise of the noisy holdout (and of the robust objective's noisy folds)."""

    scale: float = Field(1.0, description="Measurement noise as a multiple of the plant profile's levels.")
    levels: dict[str, float] = Field(
        default_factory=dict,
        description="Noise sd per sensor, overriding the profile's level (sensor name -> sd).",
    )
    seed: int = Field(
        NoiseLevels.seed, description="Seed of the noisy holdout (folds and jitter derive from it)."
    )

    def noise_levels(self) -> NoiseLevels:
        """The profile's noise levels, scaled, with the per-sensor overrides."""
        base = NoiseLevels.of(self.seed, **self.levels)
        return NoiseLevels(tuple((c, sd * self.scale) for c, sd in base.levels), self.seed)


class LabelNoiseConfig(dg.Config):
    """The label-noise holdout: labels flipped near the plant's failure-rule thresholds."""

    band: float = Field(LabelNoise.band, description="Relative distance to a failure threshold.")
    flip: float = Field(LabelNoise.flip, description="Share of the near-threshold rows flipped.")
    seed: int = Field(LabelNoise.seed, description="Seed of the flips.")


class CrossSourceConfig(dg.Config):
    """The cross-source holdouts: AI4I -> a generated fleet and back."""

    enabled: bool = Field(True, description="Score AI4I -> generated fleet and fleet -> AI4I.")
    machines: int = Field(CrossSource.machines, description="Cross-source fleet: machines.")
    rows: int = Field(CrossSource.rows, description="Cross-source fleet: readings.")
    seed: int = Field(CrossSource.seed, description="Cross-source fleet: generator seed.")

    def cross_source(self) -> CrossSource | None:
        """The cross-source shift; None when off or where the profile has no AI4I counterpart."""
        if not (self.enabled and cross_source_applies()):
            return None
        return CrossSource(self.machines, self.rows, self.seed)


class CandidateModelConfig(dg.Config):
    family: str = Field("auto", description=f"Model family: one of {', '.join(FAMILY_CHOICES)}.")
    folds: int = Field(5, description="Stratified k-fold CV folds per optuna trial.")
    trials: int = Field(5, description="Optuna trials per family (the family's reference params first).")
    seed: int = Field(0, description="Seed of the folds, optuna and the estimators.")
    objective: str = Field(
        "robust",
        description=f"Selection objective, one of {', '.join(OBJECTIVES)}: `robust` = mean PR AUC on the clean "
        "and the noisy validation folds (trials, family, threshold); `clean` = clean PR AUC only (the old one).",
    )
    calibration: str = Field(
        "sigmoid", description=f"Probability calibration on the validation folds: {', '.join(CALIBRATIONS)}."
    )
    time_budget_s: float = Field(
        60.0, description="Wall-time budget of the whole candidate (tuning race gets 60 % of it)."
    )
    jitter: JitterConfig = Field(JitterConfig(), description="Jittered copies of the training rows.")
    noise: NoiseConfig = Field(NoiseConfig(), description="Measurement noise of the noisy holdout.")
    label_noise: LabelNoiseConfig = Field(LabelNoiseConfig(), description="The label-noise holdout.")
    cross_source: CrossSourceConfig = Field(CrossSourceConfig(), description="The cross-source holdouts.")

    def robustness(self) -> Robustness:
        return Robustness(
            objective=self.objective,
            noise=self.noise.noise_levels(),
            jitter_copies=self.jitter.copies,
            jitter_scale=self.jitter.scale,
        )

    def shifts(self, noise: NoiseLevels) -> ShiftConfig:
        label = LabelNoise(self.label_noise.band, self.label_noise.flip, self.label_noise.seed)
        return ShiftConfig(noise, label, self.cross_source.cross_source())

    def params(self) -> dict[str, object]:
        """The settings as the flat MLflow params every candidate run has logged."""
        n, label, cross = self.noise, self.label_noise, self.cross_source
        return self.model_dump(exclude={"jitter", "noise", "label_noise", "cross_source"}) | {
            "jitter_copies": self.jitter.copies,
            "jitter_scale": self.jitter.scale,
            "noise_scale": n.scale,
            "noise_levels": n.levels,
            "noise_seed": n.seed,
            "label_band": label.band,
            "label_flip": label.flip,
            "label_seed": label.seed,
            "cross_source": cross.enabled,
            "cross_machines": cross.machines,
            "cross_rows": cross.rows,
            "cross_seed": cross.seed,
        }


class SequenceModelsConfig(dg.Config):
    architectures: list[str] = Field(
        list(ARCHITECTURES), description=f"Architectures to train: any of {', '.join(ARCHITECTURES)}."
    )
    window: int = Field(20, description="Readings per window (consecutive readings of one machine).")
    stride: int = Field(2, description="Readings between the starts of two training windows.")
    horizon: int = Field(
        0, description="A window is a failure if its last reading or one of the next `horizon` readings is."
    )
    validation_fraction: float = Field(0.2, description="Share of each machine's readings that validates.")
    test_fraction: float = Field(0.2, description="Share of each machine's latest readings held out.")
    hidden: int = Field(SequenceSettings.hidden, description="Hidden units per recurrent layer.")
    epochs: int = Field(SequenceSettings.epochs, description="Most training epochs per architecture.")
    patience: int = Field(SequenceSettings.patience, description="Epochs without a better validation loss.")
    threads: int = Field(SequenceSettings.threads, description="torch threads while training and scoring.")
    seed: int = Field(0, description="Seed of the weights and of the batch order.")
    time_budget_s: float = Field(
        20.0,
        description="Wall-time budget of the whole step (windows, training, scoring, MLflow logging); the "
        "architectures share what is left for training equally, each stopping its epochs in time to score.",
    )
    max_train_windows: int = Field(
        4000, description="Most training windows (all failures up to half, a seeded sample of the rest)."
    )

    def window_options(self) -> dict[str, int | float]:
        return self.model_dump(
            include={"window", "stride", "horizon", "validation_fraction", "test_fraction"}
        )

    def settings(self) -> SequenceSettings:
        return SequenceSettings(
            hidden=self.hidden,
            epochs=self.epochs,
            patience=self.patience,
            threads=self.threads,
            seed=self.seed,
        )


class ShadowGateConfig(dg.Config):
    """The shadow gate: live shadow evidence the challenger needs besides the holdout."""

    shadow_min_readings: int = Field(
        ShadowGate.min_readings, description="Shadow gate: readings scored by both that are enough evidence."
    )
    shadow_min_agreement: float = Field(
        ShadowGate.min_agreement, description="Shadow gate: least share of readings both label alike."
    )
    shadow_max_alert_rate_ratio: float = Field(
        ShadowGate.max_alert_rate_ratio,
        description="Shadow gate: most alerts per machine-day, as a multiple of the champion's.",
    )
    shadow_min_labelled: int = Field(
        ShadowGate.min_labelled,
        description="Shadow gate: labelled readings (both classes) needed to judge PR AUC on them.",
    )
    shadow_pr_auc_margin: float = Field(
        ShadowGate.pr_auc_margin,
        description="Shadow gate: how far below the champion's the PR AUC on labelled readings may be.",
    )
    shadow_on_insufficient: str = Field(
        BLOCK,
        description=f"Shadow gate with too little evidence, one of {', '.join(ON_INSUFFICIENT)}: `block` keeps "
        "the champion (the version stays challenger and shadows), `holdout` lets the holdout decide.",
    )
    shadow_label_window: str = Field(
        DEFAULT_LABEL_WINDOW,
        description="Shadow gate: how long before a maintenance record its readings are labelled.",
    )

    def shadow_settings(self) -> ShadowGate:
        """These settings as the registry's ShadowGate."""
        return ShadowGate(
            min_readings=self.shadow_min_readings,
            min_agreement=self.shadow_min_agreement,
            max_alert_rate_ratio=self.shadow_max_alert_rate_ratio,
            min_labelled=self.shadow_min_labelled,
            pr_auc_margin=self.shadow_pr_auc_margin,
            on_insufficient=self.shadow_on_insufficient,
            label_window=label_window(self.shadow_label_window),
        )


class ChampionModelConfig(ShadowGateConfig):
    shadow_gate: bool = Field(
        False,
        description="Also judge on live shadow evidence (shadow_predictions vs the champion's predictions); "
        "a new version has none yet: see shadow_on_insufficient, and the promote_challenger job.",
    )
    metric: str = Field(
        "pr_auc", description=f"Metric the challenger must win on: one of {', '.join(METRICS)}."
    )
    margin: float = Field(0.005, description="How much better than the champion the challenger must score.")
    cost_matrix: str = Field(
        "",
        description="JSON costs per machine type for the thresholds and `expected_cost`: "
        '{"L": {"missed_failure": 8000, "false_stop": 400, "late_alarm": 3000}, "M": {...}, "H": {...}}; '
        "empty: the defaults of mfd.alerts.costs.",
    )
    replay_days: float = Field(
        7.0, description="Replay the last N days of stored readings with candidate and champion (0: off)."
    )
    replay_horizon: str = Field(
        DEFAULT_LABEL_WINDOW,
        description="Replay: how long before a labelled failure an alert catches it (pandas Timedelta).",
    )
    require_replay_not_worse: bool = Field(
        False,
        description="Keep the champion when the replay shows the candidate catching fewer labelled "
        "failures or raising more false alarms.",
    )

    def gate(self) -> ShadowGate | None:
        """The shadow gate configured, None when it is off."""
        return self.shadow_settings() if self.shadow_gate else None


def _source_run(context: dg.AssetExecutionContext, name: str) -> str:
    event = context.instance.get_latest_materialization_event(dg.AssetKey(name))
    return event.run_id if event is not None else ""


def _training_set_rows(context: dg.AssetExecutionContext) -> str:
    """Rows of the latest training_set (its `rows` metadata): the baseline retraining counts new labels from."""
    event = context.instance.get_latest_materialization_event(dg.AssetKey("training_set"))
    rows = event.asset_materialization.metadata.get("rows") if event and event.asset_materialization else None
    return str(rows.value) if rows is not None else ""


@dg.asset(group_name=GROUP, kinds={"pandas"})
def holdout(config: HoldoutConfig, training_set: pd.DataFrame) -> dg.Output[pd.DataFrame]:
    """The shared holdout: a seeded share of training_set's real rows, chosen by reading id: label-stratified
    for snapshot data, time-honest (whole machines, or each machine's latest readings with a gap of one
    horizon) where machines run to failure. Augmentation, the quality panel and the candidate model never
    train on these rows; all score on them."""
    rows = holdout_split(training_set, config.fraction, config.seed).holdout
    failures = int(rows[LABEL_COLUMN].astype("int64").sum())
    return dg.Output(
        rows,
        metadata=rounded(
            {
                "dagster/row_count": len(rows),
                "failures": failures,
                "training_set_rows": len(training_set),
                "fraction": config.fraction,
                "split": "time-honest (by machine and time)" if time_honest(rows) else "random (stratified)",
                "machines": int(rows["machine_id"].nunique()) if "machine_id" in rows.columns else 0,
                "seed": config.seed,
            }
        ),
    )


def _training_rows(cleaned_set: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    """cleaned_set without the holdout rows; time-honest where machines run to failure: no reading of a
    holdout machine within a horizon before it."""
    if time_honest(holdout):
        return honest_training_rows(cleaned_set, holdout, PROFILE.horizon)
    return without_holdout(cleaned_set, frozenset(int(i) for i in holdout["id"]))


def _candidate_tags(context: dg.AssetExecutionContext, version: str) -> dict[str, str]:
    """The candidate run's tags: this run, the runs of its inputs, the labels it counted, its data."""
    return {
        "dagster_run_id": context.run_id,
        "training_set": "cleaned_set",
        "training_set_run_id": _source_run(context, "cleaned_set"),
        "holdout_run_id": _source_run(context, "holdout"),
        LABELLED_READINGS_TAG: _training_set_rows(context),
        "training_set_version": version,
    }


def _candidate_plots(candidate: Candidate) -> dict[str, str]:
    """The candidate's plots as markdown images, by metadata key."""
    plots = {
        "shifted_holdouts": png_markdown(shift_figure(candidate), "clean vs shifted holdouts"),
        "reliability": png_markdown(calibration_figure(candidate), "reliability"),
        "confusion_matrix": png_markdown(confusion_figure(candidate), "confusion matrix"),
        "pr_curve": png_markdown(pr_curve_figure(candidate), "PR curve"),
    }
    if len(candidate.lead):
        plots["risk_over_time"] = png_markdown(lead_figure(candidate), "risk over time and alarms")
    return plots


def _candidate_scores(candidate: Candidate) -> dict[str, object]:
    """The candidate's scores as metadata: holdout, CV per family, lead time, RUL, shifted holdouts,
    calibration and latency."""
    scored = pd.DataFrame([candidate.holdout_scores], index=[f"{candidate.family} (holdout)"])
    lead = {"lead_time_by_family": table_metadata(candidate.lead)} if len(candidate.lead) else {}
    return {
        "family": candidate.family,
        "threshold": candidate.threshold,
        "holdout_pr_auc": candidate.holdout_scores["pr_auc"],
        "holdout_roc_auc": candidate.holdout_scores["roc_auc"],
        "holdout_scores": table_metadata(scored),
        "cv_by_family": table_metadata(candidate.families),
        "selected_by": candidate.selected_by,
        **lead,
        **{f"holdout_{k}": v for k, v in candidate.lead_scores.items()},
        **{f"holdout_{k}": v for k, v in candidate.rul_scores.items()},
        **{
            f"holdout_{shift.replace('->', '_to_')}": table_metadata(candidate.shift_table(shift))
            for shift in candidate.shifted["shift"].unique()
        },
        "shift_settings": dg.MetadataValue.json(candidate.shifts.record()),
        "holdout_brier": candidate.calibration["holdout_brier"],
        "holdout_brier_uncalibrated": candidate.calibration["holdout_brier_uncalibrated"],
        "latency_row_ms": candidate.latency["latency_row_ms"],
        "latency_10k_ms": candidate.latency["latency_10k_ms"],
        "train_seconds": candidate.seconds,
    }


@dg.asset(group_name=GROUP, kinds={"mlflow", "sklearn"})
def candidate_model(
    context: dg.AssetExecutionContext,
    config: CandidateModelConfig,
    tracking: Tracking,
    cleaned_set: pd.DataFrame,
    holdout: pd.DataFrame,
) -> dg.Output[LoggedCandidate]:
    """The configured model family (or the best of all, `auto`), tuned with optuna on stratified k-fold CV
    of cleaned_set without the holdout rows, its threshold chosen on the validation folds, scored on the
    shared holdout, logged to MLflow, all within time_budget_s (budget vs spent per phase in metadata)."""
    spent = Spent(config.time_budget_s)
    train = _training_rows(cleaned_set, holdout)
    experiment_id = tracking.experiment_id()  # fail fast, before training, when MLflow is unreachable
    robustness = config.robustness()
    candidate = train_candidate(
        train,
        holdout=holdout,
        family=config.family,
        folds=config.folds,
        trials=config.trials,
        seed=config.seed,
        robustness=robustness,
        calibration=config.calibration,
        shifts=config.shifts(robustness.noise),
        time_budget_s=config.time_budget_s,
        spent=spent,
        reserve_s=LOG_RESERVE_S,
    )
    version = data_version(train)
    with spent.phase("mlflow_logging"):
        logged = log_candidate(
            candidate,
            experiment_id=experiment_id,
            settings=config.params(),
            tags=_candidate_tags(context, version),
        )
    context.log.info("candidate %s logged in MLflow run %s", candidate.family, logged.run_id)
    with spent.phase("plots"):
        plots = _candidate_plots(candidate)
    context.log.info("candidate_model %s", spent.line())
    return dg.Output(
        logged,
        metadata=rounded(
            {
                **{name: dg.MetadataValue.md(text) for name, text in plots.items()},
                **spent.record(),
                "budget": table_metadata(spent.table()),
                "mlflow_run": dg.MetadataValue.url(tracking.run_url(experiment_id, logged.run_id)),
                **_candidate_scores(candidate),
                "objective": config.objective,
                "calibration": config.calibration,
                "training_set_version": version,
            }
        ),
    )


@dg.asset(group_name=GROUP, kinds={"mlflow", "pytorch"})
def sequence_models(
    context: dg.AssetExecutionContext,
    config: SequenceModelsConfig,
    tracking: Tracking,
    training_set: pd.DataFrame,
) -> dg.MaterializeResult:
    """The configured sequence architectures on windows of each machine's readings in time order, split in
    time per machine (train, validation, test), one nested MLflow run each. Only rows with a per-machine
    series count; without any (e.g. AI4I, one reading per product), nothing is trained and the metadata
    says why. No registry change: the champion stays the tabular model."""
    spent = Spent(config.time_budget_s)
    check_architectures(config.architectures)
    with spent.phase("windows"):
        _, split = split_windows(training_set, **config.window_options())
        split = split.bounded(config.max_train_windows, config.seed)
    windows = {
        "machines": split.machines,
        "rows_used": split.rows_used,
        "rows_left_out": split.rows_left_out,
        "windows": table_metadata(split.summary()),
    }
    problem = split.problem()
    if problem:
        context.log.warning("sequence models not trained: %s", problem)
        return dg.MaterializeResult(metadata={"trained": False, "reason": problem, **windows})
    experiment_id = tracking.experiment_id()  # fail fast, before training, when MLflow is unreachable
    settings = config.settings()
    results = []
    runs = SequenceRuns(
        split,
        experiment_id=experiment_id,
        settings=settings,
        params=config.model_dump(),
        tags={
            "dagster_run_id": context.run_id,
            "training_set_run_id": _source_run(context, "training_set"),
            "training_set_version": data_version(training_set),
        },
    )
    with runs:
        for k, architecture in enumerate(config.architectures):
            # An equal share of what is left, less this architecture's logging (as long as the last one's).
            left = spent.deadline.remaining() - SEQUENCE_FINISH_RESERVE_S
            log_s = SEQUENCE_LOG_RESERVE_S if runs.log_s is None else runs.log_s
            share = Deadline.after(left / (len(config.architectures) - k) - log_s)
            with spent.phase("training"):
                results.append(train_sequence_model(architecture, split, settings, share))
            context.log.info("%s: %s", architecture, results[-1].scores)
            with spent.phase("mlflow_logging"):
                runs.log(results[-1])
        with spent.phase("mlflow_logging"):
            logged = runs.finish(results)
    table = comparison_table(results)
    table["mlflow_run"] = [
        f"[run]({tracking.run_url(experiment_id, logged.run_ids[a])})" for a in table.index
    ]
    best = table.index[0]
    with spent.phase("plots"):
        pr_curves = png_markdown(pr_curves_figure(results), "PR curves")
    context.log.info("sequence_models %s", spent.line())
    return dg.MaterializeResult(
        metadata=rounded(
            {
                **spent.record(),
                "budget": table_metadata(spent.table()),
                "trained": True,
                "mlflow_run": dg.MetadataValue.url(tracking.run_url(experiment_id, logged.parent_run_id)),
                "comparison": table_metadata(table),
                "best_architecture": best,
                "best_test_pr_auc": float(table.loc[best, "pr_auc"]),
                "time_budget_s": config.time_budget_s,
                "fit_s_total": float(table["fit_s"].sum()),
                **windows,
                "pr_curves": dg.MetadataValue.md(pr_curves),
            }
        )
    )


@dg.asset(group_name=GROUP, kinds={"mlflow"})
def champion_model(
    context: dg.AssetExecutionContext,
    config: ChampionModelConfig,
    tracking: Tracking,
    readings_store: ReadingsStore,
    candidate_model: LoggedCandidate,
) -> dg.MaterializeResult:
    """The candidate registered as a new version (alias `challenger` once evaluated); `champion` moves to it
    only if it beats the current champion on the same holdout by the configured margin, and, when required,
    the replay of the last replay_days of stored readings shows it no worse."""
    replay = _replay(config, tracking, readings_store, candidate_model)
    verdict = replay.not_worse("candidate", "champion") if replay is not None else (True, "no replay")
    blocked = config.require_replay_not_worse and not verdict[0]
    decision = tracking.promote(
        candidate_model,
        metric=config.metric,
        margin=config.margin,
        keep_champion=verdict[1] if blocked else None,  # a worse replay keeps the champion
        tags={"dagster_run_id": context.run_id, "mlflow_run_id": candidate_model.run_id},
        cost_matrix=parse_cost_matrix(config.cost_matrix),
        shadow_gate=config.gate(),
        engine=readings_store.engine,
    )
    reason = f"champion kept: {verdict[1]}" if blocked else decision.reason
    context.log.info(reason)
    return dg.MaterializeResult(
        metadata=rounded(
            {
                "promoted": decision.promoted,
                "reason": reason,
                "replay_verdict": verdict[1],
                "shadow_verdict": decision.shadow.reason
                if decision.shadow is not None
                else "shadow gate off",
                **(_replay_metadata(replay) if replay is not None else {}),
                "challenger_version": decision.challenger,
                "champion_version": decision.champion_after or "",
                "previous_champion_version": decision.champion_before or "",
                "metric": decision.metric,
                "margin": decision.margin,
                "scores": table_metadata(decision.table()),
                "thresholds_by_machine_type": dg.MetadataValue.json(decision.thresholds),
                "model_card": dg.MetadataValue.md(decision.card),
                "mlflow_run": dg.MetadataValue.url(
                    tracking.run_url(candidate_model.experiment_id, candidate_model.run_id)
                ),
            }
        )
    )


def _replay(
    config: ChampionModelConfig, tracking: Tracking, readings_store: ReadingsStore, logged: LoggedCandidate
) -> Replay | None:
    """Candidate vs champion on the last replay_days of stored readings; None without a champion or days."""
    if config.replay_days <= 0 or tracking.champion_status().version is None:
        return None
    models = {
        "candidate": logged_model(logged.model_uri, tracking.model_name, logged.candidate.threshold),
        "champion": load_version(tracking.client(), tracking.model_name, CHAMPION),
    }
    return replay_models(
        readings_store.engine, models, config.replay_days, label_window(config.replay_horizon)
    )


def _replay_metadata(replay: Replay) -> dict[str, object]:
    return {
        "replay": table_metadata(replay.table),
        "replay_readings": replay.readings,
        "replay_plot": dg.MetadataValue.md(
            png_markdown(replay_figure(replay), "replay: candidate vs champion")
        ),
    }


@dg.op(
    description="Move `champion` to the shadowed `challenger` when its holdout verdict at registration and "
    "its live shadow evidence pass the shadow gate."
)
def promote_shadowed_challenger(
    context: dg.OpExecutionContext,
    config: ShadowGateConfig,
    tracking: Tracking,
    readings_store: ReadingsStore,
) -> dg.Output[str]:
    decision = tracking.promote_challenger(readings_store.engine, config.shadow_settings())
    context.log.info(decision.reason)
    return dg.Output(
        decision.champion_after or "",
        metadata=rounded(
            {
                "promoted": decision.promoted,
                "reason": decision.reason,
                "challenger_version": decision.challenger,
                "champion_version": decision.champion_after or "",
                "gate": table_metadata(decision.table()),
            }
        ),
    )


@dg.op(description="Move the `champion` alias back to the previous champion version.")
def move_champion_back(context: dg.OpExecutionContext, tracking: Tracking) -> str:
    result = tracking.rollback()
    context.log.info(
        "champion rolled back from version %s to %s%s",
        result.from_version,
        result.to_version,
        f" (skipped deleted {', '.join(result.skipped)})" if result.skipped else "",
    )
    return result.to_version
