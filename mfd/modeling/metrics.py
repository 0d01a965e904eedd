"""How a failure classifier is scored: ranking and threshold metrics, the F1-best threshold, the confusion
matrix and in-process inference latency."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score
from sklearn.pipeline import Pipeline

from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS

METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "f1", "recall", "precision")


def scores(y: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), and F1 / recall / precision at `threshold`."""
    predicted = proba >= threshold
    tp = float(np.sum(predicted & (y == 1)))
    precision = tp / max(float(predicted.sum()), 1.0)
    recall = tp / max(float((y == 1).sum()), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "f1": f1,
        "recall": recall,
        "precision": precision,
    }


def best_threshold(y: np.ndarray, proba: np.ndarray) -> float:
    """The probability threshold that maximizes F1 on (out-of-fold) validation predictions."""
    precision, recall, thresholds = precision_recall_curve(y, proba)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    return float(thresholds[int(np.argmax(f1))])


def confusion(y: np.ndarray, proba: np.ndarray, threshold: float) -> np.ndarray:
    """2x2 confusion matrix (rows: true 0/1, columns: predicted 0/1)."""
    return confusion_matrix(y, (proba >= threshold).astype("int64"), labels=[0, 1])


def _median_ms(pipeline: Pipeline, rows: pd.DataFrame, repeats: int) -> float:
    pipeline.predict_proba(rows)  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        pipeline.predict_proba(rows)
        times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def latency(pipeline: Pipeline, readings: pd.DataFrame, repeats: int = 50) -> dict[str, float]:
    """In-process predict_proba latency, median ms: a batch of one row (`repeats` calls) and 10,000 rows
    (5 calls)."""
    rows = readings[list(MODEL_INPUT_COLUMNS)].reset_index(drop=True)
    batch = rows.sample(10_000, replace=len(rows) < 10_000, random_state=0)
    return {
        "latency_row_ms": _median_ms(pipeline, rows.head(1), repeats),
        "latency_10k_ms": _median_ms(pipeline, batch, 5),
    }
