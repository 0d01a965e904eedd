"""The labelled rows a classifier trains on: model inputs and the 0/1 label, their content version, and
whether there are enough failures to train at all."""

from __future__ import annotations

import hashlib

import pandas as pd

from mfd.errors import MfdError
from mfd.modeling.pipeline import MODEL_INPUT_COLUMNS
from mfd.schema import LABEL_COLUMN

MIN_FAILURES_PER_FOLD = 2


def labelled(df: pd.DataFrame) -> pd.DataFrame:
    """The rows with a label, reduced to the model inputs and the label (int)."""
    missing = [c for c in (*MODEL_INPUT_COLUMNS, LABEL_COLUMN) if c not in df.columns]
    if missing:
        raise MfdError(f"training data lacks column(s) {', '.join(missing)}")
    out = df.loc[df[LABEL_COLUMN].notna(), [*MODEL_INPUT_COLUMNS, LABEL_COLUMN]].reset_index(drop=True)
    out[LABEL_COLUMN] = out[LABEL_COLUMN].astype("int64")
    return out


def data_version(df: pd.DataFrame) -> str:
    """A short content hash of the labelled rows a model trains on: the training-set version."""
    hashed = pd.util.hash_pandas_object(labelled(df), index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes()).hexdigest()[:16]


def trainability_problem(df: pd.DataFrame, folds: int = 5) -> str | None:
    """Why `df` cannot train a classifier with `folds`-fold CV plus a holdout, or None if it can."""
    if LABEL_COLUMN not in df.columns:
        return f"no `{LABEL_COLUMN}` column"
    labels = df[LABEL_COLUMN].dropna().astype("int64")
    classes = sorted(labels.unique().tolist())
    if len(classes) < 2:
        return (
            f"one class only ({classes or 'no labelled rows'}): a classifier needs failures and non-failures"
        )
    failures = int(labels.sum())
    needed = MIN_FAILURES_PER_FOLD * (folds + 1)
    if failures < needed:
        return (
            f"{failures} failures in {len(labels)} labelled rows: {folds}-fold CV plus a holdout needs at least "
            f"{needed} ({MIN_FAILURES_PER_FOLD} per fold)"
        )
    return None
