"""The one untouched holdout of real rows: chosen by reading `id`, seeded and stratified on the label.

The `holdout` asset is this split of `training_set`; augmentation, the quality panel and the candidate
model all read it, so the rows a model is scored on are never seen by an augmentation method, copied into
an augmented set, tuned on or fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mfd.errors import MfdError
from mfd.schema import LABEL_COLUMN


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    holdout: pd.DataFrame


def _require(df: pd.DataFrame, what: str) -> None:
    missing = [c for c in ("id", LABEL_COLUMN) if c not in df.columns]
    if missing:
        raise MfdError(f"{what} lacks column(s) {missing}: the holdout is chosen by reading id and label")
    if df["id"].isna().any() or df["id"].duplicated().any():
        raise MfdError(f"{what} has missing or duplicate ids: every real reading needs a unique id")
    if df[LABEL_COLUMN].isna().any():
        raise MfdError(f"{what} has rows without {LABEL_COLUMN}: label them or drop them before the split")


def holdout_ids(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> frozenset[int]:
    """Ids of the holdout rows: a seeded, label-stratified `fraction` of `df`, independent of row order."""
    _require(df, "the frame to split")
    if not 0.0 < fraction < 1.0:
        raise MfdError(f"holdout fraction must be between 0 and 1, got {fraction}")
    ordered = df.sort_values("id")
    labels = ordered[LABEL_COLUMN].astype("int64").to_numpy()
    if np.bincount(labels, minlength=2).min() < 2:
        raise MfdError("the holdout split needs at least 2 failures and 2 non-failures in the training set")
    _, held = train_test_split(
        ordered["id"].astype("int64").to_numpy(), test_size=fraction, random_state=seed, stratify=labels
    )
    return frozenset(int(i) for i in held)


def holdout_split(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> Split:
    """`df` split into its training part and its holdout (see `holdout_ids`)."""
    held = holdout_ids(df, fraction, seed)
    in_holdout = df["id"].astype("int64").isin(held)
    return Split(train=df[~in_holdout].reset_index(drop=True), holdout=df[in_holdout].reset_index(drop=True))


def without_holdout(df: pd.DataFrame, held: frozenset[int]) -> pd.DataFrame:
    """`df` (e.g. the cleaned set, a subset of the training set) minus every holdout row."""
    _require(df, "the frame")
    return df[~df["id"].astype("int64").isin(held)].reset_index(drop=True)


def assert_disjoint(df: pd.DataFrame, held: frozenset[int], name: str) -> None:
    """Raise if any real row of `df` is a holdout row (synthetic rows carry no id)."""
    ids = df["id"].dropna().astype("int64")
    leaked = ids[ids.isin(held)]
    if len(leaked):
        raise MfdError(
            f"{len(leaked)} holdout row(s) found in {name} (e.g. id {int(leaked.iloc[0])}): it was built "
            "with another holdout; rematerialize it from the current `holdout` asset"
        )
