"""Prediction batches: readings in an id range read in one query, validated, given their machine-window
features where the profile declares windows (the machines' earlier readings a window reaches, read in one
more query: `mfd.detection.history`), scored in one model call (probability and, where the model has a RUL
head, `rul_estimate`),
labelled at the version's threshold for each machine type, and written once into `predictions`,
`failure_events` and, in the same transaction, the alert outbox (upserts, so a re-run writes the same rows).
A challenger, when given, scores the same validated frame into `shadow_predictions` in that transaction.
Only the predicted failures are explained (SHAP, nearest physics rule), on a worker thread while the
predictions are written; every batch reports its expected cost against "no model" and against "alarm on
every rule hit"."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits

from mfd import validation
from mfd.alerts import outbox
from mfd.alerts.costs import DecisionPolicy, batch_costs
from mfd.alerts.explanations import Explainer, explainer_for, top_features
from mfd.alerts.rules import nearest_rules, rule_hits
from mfd.detection.history import in_window_order, with_window_features
from mfd.detection.shadow import Challenger, ShadowResult, shadow_rows, write_shadow
from mfd.modeling.model_io import FailureModel
from mfd.modeling.tree_predictor import scoring_threads
from mfd.schema import SENSOR_COLUMNS
from mfd.storage.bulk import BulkWriter
from mfd.storage.copy import copy_frame
from mfd.storage.tables import (
    ensure_alert_tables,
    ensure_detection_tables,
    failure_events,
    predictions,
    readings,
)
from mfd.validation import READING_RULES

BATCH_COLUMNS: tuple[str, ...] = ("id", "machine_id", "timestamp", "machine_type", *SENSOR_COLUMNS)
# SHAP per event costs ~0.5 ms (100-tree HistGradientBoosting) to several ms (forests, sampled): a batch
# explains at most this many events, so a flood of events (a backlog, a plant-wide fault) keeps detection
# near its scoring speed. Each machine's first event in the batch is explained first.
EXPLAIN_LIMIT = 200
SCORING_THREADS = scoring_threads()  # row chunks on Python threads (`chunked_predict_proba`)


@dataclass(frozen=True)
class BatchResult:
    """What one batch read, scored and wrote, and how long each step took (seconds)."""

    first_id: int
    last_id: int
    rows_read: int
    rows_scored: int
    failures: int
    invalid: dict[str, int]
    invalid_ids: list[int]
    model_name: str
    model_version: str
    seconds: dict[str, float]
    events: pd.DataFrame = field(repr=False)
    costs: dict[str, float] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    shadow: ShadowResult | None = None
    # Every scored reading as `mfd.alarms.update_alarms` takes it (reading_id, machine_id, machine_type,
    # timestamp, probability, label, rul_estimate with a RUL head): the batch goes to the alarms unread.
    scored: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)

    @property
    def invalid_rows(self) -> int:
        return sum(self.invalid.values())


def read_batch(engine: Engine, first_id: int, last_id: int) -> pd.DataFrame:
    """Readings with first_id <= id <= last_id in id order (PostgreSQL: one COPY TO, `mfd.storage.copy`)."""
    in_range = readings.c.id.between(int(first_id), int(last_id))
    if engine.dialect.name == "postgresql":
        return copy_frame(engine, readings, BATCH_COLUMNS, in_range, order_by=("id",))
    query = sa.select(*(readings.c[c] for c in BATCH_COLUMNS)).where(in_range).order_by(readings.c.id)
    with engine.connect() as conn:
        df = pd.read_sql(query, conn)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df.astype({c: "float64" for c in SENSOR_COLUMNS})


def invalid_reasons(df: pd.DataFrame) -> pd.Series:
    """Why each reading may not be scored (first failed rule of `mfd.validation`), NA where it is valid."""
    texts, failed = [], []
    for col, allowed in validation.categories(READING_RULES).items():
        texts.append(f"{col} not {'/'.join(allowed)}")
        failed.append(~df[col].isin(allowed).fillna(False).to_numpy(dtype=bool))
    for col in SENSOR_COLUMNS:
        rng = READING_RULES[col].range
        values = df[col].to_numpy(dtype="float64", na_value=np.nan)
        missing = np.isnan(values)
        texts += [f"{col} missing", f"{col} out of range"]
        failed += [missing, ~missing & ~((values >= rng.low) & (values <= rng.high))]
    hits = np.vstack(failed)
    reason = np.asarray(texts, dtype=object)[hits.argmax(axis=0)]
    reason[~hits.any(axis=0)] = pd.NA
    return pd.Series(reason, index=df.index, dtype="object")


def explained_first(failed: pd.DataFrame, probability: np.ndarray, limit: int) -> np.ndarray:
    """Which events get SHAP values when a batch has more than `limit`: each machine's first event in the
    batch, then the most probable ones."""
    first = ~failed["machine_id"].duplicated().to_numpy()
    chosen = np.zeros(len(failed), dtype=bool)
    chosen[np.lexsort((-probability, ~first))[:limit]] = True
    return chosen


def explain_events(
    model: FailureModel,
    failed: pd.DataFrame,
    probability: np.ndarray,
    limit: int = EXPLAIN_LIMIT,
    explainer: Explainer | None = None,
) -> pd.DataFrame:
    """The nearest physics rule of each predicted failure, and the top SHAP features of at most `limit` of
    them (`explained_first`): events only, and a flood of events costs detection a bounded time."""
    columns = {"top_features": [], "nearest_rule": [], "explainer": []}
    if failed.empty:
        return pd.DataFrame(columns, index=failed.index)
    chosen = explained_first(failed, probability, limit)
    out = pd.DataFrame(
        {
            "top_features": "[]",
            "nearest_rule": nearest_rules(failed),
            "explainer": f"none (over the batch's budget of {limit} SHAP explanations)",
        },
        index=failed.index,
    )
    rows = failed[chosen]
    if rows.empty:  # explain_limit 0: nearest rules only, no SHAP
        return out
    explainer = explainer or explainer_for(model.name, model.version, model.pyfunc.get_raw_model())
    out.loc[rows.index, "top_features"] = top_features(rows, explainer.explain(rows))
    out.loc[rows.index, "explainer"] = f"shap {explainer.kind}"
    return out


def score_readings(
    model: FailureModel, policy: DecisionPolicy, valid: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Probability, threshold (of each reading's machine type) and alarm (probability >= threshold) of
    validated readings: the one scoring step of batch detection and of the stream (`mfd.streaming`)."""
    probability = model.probability_of_valid(valid, SCORING_THREADS)
    threshold = policy.threshold_for(valid["machine_type"])
    return probability, threshold, probability >= threshold


@dataclass(frozen=True)
class _Scored:
    """A batch's validated readings and what the champion made of them."""

    valid: pd.DataFrame
    probability: np.ndarray
    threshold: np.ndarray
    alarm: np.ndarray
    rul: np.ndarray | None
    costs: dict[str, float]

    @classmethod
    def of(cls, model: FailureModel, policy: DecisionPolicy, valid: pd.DataFrame) -> _Scored:
        probability, threshold, alarm = score_readings(model, policy, valid)
        rul = model.estimate_rul(valid) if len(valid) else None
        hits = rule_hits(valid)
        costs = batch_costs(probability, alarm, hits, valid["machine_type"].to_numpy(), policy.cost_matrix)
        return cls(valid, probability, threshold, alarm, rul, costs)

    def predictions(self) -> pd.DataFrame:
        """One row per scored reading: reading_id, probability, label (and rul_estimate with a RUL head)."""
        scored = pd.DataFrame(
            {
                "reading_id": self.valid["id"].to_numpy(),
                "probability": self.probability,
                "label": self.alarm.astype("int8"),
            }
        )
        if self.rul is not None:
            scored["rul_estimate"] = np.asarray(self.rul, dtype="float64")
        return scored

    def for_alarms(self) -> pd.DataFrame:
        """Every scored reading with its machine, type, time, probability and label (`BatchResult.scored`)."""
        frame = self.valid[["id", "machine_id", "machine_type", "timestamp"]].rename(
            columns={"id": "reading_id"}
        )
        frame = frame.assign(probability=self.probability, label=self.alarm.astype("int8"))
        if self.rul is not None:
            frame["rul_estimate"] = np.asarray(self.rul, dtype="float64")
        return frame.reset_index(drop=True)

    def events(self, model: FailureModel) -> pd.DataFrame:
        """The predicted failures (id, machine_id, timestamp, machine_type, probability, ...)."""
        alarm = self.alarm
        return self.valid.loc[alarm, ["id", "machine_id", "timestamp", "machine_type"]].assign(
            probability=self.probability[alarm],
            rul_estimate=np.nan if self.rul is None else self.rul[alarm],
            threshold=self.threshold[alarm],
            model_name=model.name,
            model_version=model.version,
        )


def score_batch(
    engine: Engine,
    model: FailureModel,
    first_id: int,
    last_id: int,
    policy: DecisionPolicy | None = None,
    explain_limit: int = EXPLAIN_LIMIT,
    challenger: Challenger | None = None,
) -> BatchResult:
    """Read, validate, score and write the readings with first_id <= id <= last_id; `policy` gives the
    thresholds per machine type and the cost matrix (None: the model's one threshold, default costs);
    at most `explain_limit` events get SHAP values; a `challenger` also scores them into
    `shadow_predictions`. `seconds`: read, windows, score, shadow (the challenger's scoring) and explain (each
    on a worker thread beside the predictions' COPY), write (the transaction, both awaited inside it)."""
    if first_id > last_id:
        raise ValueError(f"first_id {first_id} is after last_id {last_id}")
    policy = policy or DecisionPolicy.from_tags({}, model.threshold)
    ensure_detection_tables(engine)
    ensure_alert_tables(engine)
    t0 = time.perf_counter()
    df = read_batch(engine, first_id, last_id)
    t1 = time.perf_counter()
    reasons = invalid_reasons(df)
    valid = in_window_order(df[reasons.isna()]).reset_index(drop=True)
    valid = with_window_features(engine, valid, first_id)
    t_windows = time.perf_counter()
    # No OpenMP threads: runs go side by side (max_concurrent_runs 4) and OpenMP threads across processes
    # oversubscribe the cores (3.0 s with two against 1.1 s with one for 100k readings on the shared
    # 2-core host); the rows are scored in chunks on SCORING_THREADS Python threads instead.
    with threadpool_limits(1):
        scored = _Scored.of(model, policy, valid)
        t2 = time.perf_counter()
        events = scored.events(model)
        written, explained, shadow = _explain_and_write(
            engine, model, scored, events, (first_id, last_id), explain_limit, challenger
        )
        t3 = time.perf_counter()
    explanations, explain_seconds = explained.result()
    shadow_seconds = {"shadow": shadow.result()[1]} if shadow is not None and not shadow.exception() else {}
    return BatchResult(
        first_id=first_id,
        last_id=last_id,
        rows_read=len(df),
        rows_scored=len(valid),
        failures=len(events),
        invalid=reasons.dropna().value_counts().to_dict(),
        invalid_ids=df.loc[reasons.notna(), "id"].astype(int).tolist(),
        model_name=model.name,
        model_version=model.version,
        seconds={
            "read": t1 - t0,
            "windows": t_windows - t1,
            "score": t2 - t_windows,
            **shadow_seconds,
            "explain": explain_seconds,
            "write": t3 - t2,
        },
        events=events.join(explanations).rename(columns={"id": "reading_id"}),
        costs=scored.costs,
        thresholds={t: float(v) for t, v in policy.thresholds.items()},
        shadow=written,
        scored=scored.for_alarms(),
    )


_Timed = Future[tuple[pd.DataFrame, float]]


def _explain_and_write(
    engine: Engine,
    model: FailureModel,
    scored: _Scored,
    events: pd.DataFrame,
    ids: tuple[int, int],
    explain_limit: int,
    challenger: Challenger | None,
) -> tuple[ShadowResult | None, _Timed, _Timed | None]:
    """The challenger's scoring and the events' SHAP (this process's CPU) on worker threads beside the COPY of
    the predictions (the server's CPU); the shadow rows and the events are written after them, in the same
    transaction. What was written for the challenger, and both futures."""
    alarm = scored.alarm
    with ThreadPoolExecutor(2, thread_name_prefix="mfd-batch") as pool:
        failed = scored.valid[alarm]
        explained = pool.submit(
            _timed, explain_events, model, failed, scored.probability[alarm], explain_limit
        )
        shadow = (
            pool.submit(_timed, shadow_rows, challenger, scored.valid, SCORING_THREADS)
            if challenger
            else None
        )
        written = write_batch(
            engine, model, scored.predictions(), events, *ids, explained, challenger, shadow
        )
    return written, explained, shadow


def _timed(step: Callable[..., pd.DataFrame], *args: Any) -> tuple[pd.DataFrame, float]:
    """`step(*args)` on a worker thread with its own OpenMP limit of one, and the seconds it took."""
    start = time.perf_counter()
    with threadpool_limits(1):
        out = step(*args)
    return out, time.perf_counter() - start


def _shadow_written(
    conn: sa.Connection, challenger: Challenger, shadow: Future[tuple[pd.DataFrame, float]]
) -> ShadowResult:
    """Write the challenger's rows; a challenger that failed to score writes none and says why."""
    try:
        rows, _ = shadow.result()
    except Exception as exc:  # noqa: BLE001 - a broken challenger never fails the champion's batch
        model = challenger.model
        return ShadowResult(model.name, model.version, 0, 0, error=f"{type(exc).__name__}: {exc}")
    return write_shadow(conn, challenger.model, rows)


_PREDICTION_UPDATE = ("model_name", "model_version", "probability", "label", "scored_at")
_EVENT_UPDATE = ("probability", "rul_estimate", "model_name", "model_version", "top_features")
# detected_at: first detection. A model without a RUL head writes no rul_estimate (the predictions stay on
# COPY BINARY, which has no NULL here); one left by an earlier model is cleared in the same transaction.


def write_batch(
    engine: Engine,
    model: FailureModel,
    scored: pd.DataFrame,
    events: pd.DataFrame,
    first_id: int,
    last_id: int,
    explained: Future[tuple[pd.DataFrame, float]],
    challenger: Challenger | None = None,
    shadow: Future[tuple[pd.DataFrame, float]] | None = None,
) -> ShadowResult | None:
    """Upsert predictions, then the challenger's `shadow` rows, then the events with their `explained`
    columns (both awaited here), and add the events' alerts to the outbox, in one transaction
    (`mfd.storage.bulk`); events of readings no longer predicted to fail in the range are removed (their
    undelivered alerts withdrawn), so a re-run with another model leaves the same state as a first run."""
    now = datetime.now(UTC)
    by = {"model_name": model.name, "model_version": model.version}
    written = None
    with engine.begin() as conn:
        with_rul = ("rul_estimate",) if "rul_estimate" in scored.columns else ()
        BulkWriter(
            conn,
            predictions,
            ("reading_id", "probability", "label", *with_rul),
            conflict=("reading_id",),
            update=(*_PREDICTION_UPDATE, *with_rul),
            constants={**by, "scored_at": now},
        ).write_frame(scored)
        if not with_rul:
            conn.execute(
                predictions.update()
                .where(
                    predictions.c.reading_id.between(first_id, last_id),
                    predictions.c.rul_estimate.isnot(None),
                )
                .values(rul_estimate=None)
            )
        if challenger is not None and shadow is not None:
            written = _shadow_written(conn, challenger, shadow)
        events = events.join(explained.result()[0])
        if len(events):
            BulkWriter(
                conn,
                failure_events,
                ("reading_id", "machine_id", "timestamp", "probability", "rul_estimate", "top_features"),
                conflict=("reading_id",),
                update=_EVENT_UPDATE,
                constants={**by, "detected_at": now},
            ).write_frame(events.rename(columns={"id": "reading_id"}))
        predicted = sa.select(predictions.c.reading_id).where(
            predictions.c.reading_id == failure_events.c.reading_id, predictions.c.label == 1
        )
        conn.execute(
            failure_events.delete().where(
                failure_events.c.reading_id.between(first_id, last_id), ~sa.exists(predicted)
            )
        )
        outbox.enqueue(conn, events.rename(columns={"id": "reading_id"}), now)
        outbox.withdraw(conn, first_id, last_id)
    return written
