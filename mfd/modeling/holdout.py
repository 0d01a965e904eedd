"""The one untouched holdout of real rows, chosen by reading `id`.

Snapshot data (AI4I: one reading per product, labels on the reading) gets a seeded split stratified on the
label. Machines run to failure (a profile whose labels come from failure records: `Profile.run_to_failure`)
get a time-honest split (`time_honest_ids`): by machine when the fleet has enough machines (a held-out
machine's whole life is in the holdout, so its lead times can be measured), else by time within each machine
with a gap of one horizon: no training reading lies later than a holdout reading of its machine minus the gap,
so no label a model trains on looks into the holdout's future (`honest_training_rows`).

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
from mfd.profiles import MACHINE, TIMESTAMP
from mfd.schema import LABEL_COLUMN, PROFILE

# Fewer machines than this many per held-out machine's worth (1 / fraction): split each machine in time.
MACHINES_PER_HOLDOUT_SHARE = 2


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


def time_honest(df: pd.DataFrame) -> bool:
    """Whether `df` gets the time-honest split: the profile runs machines to failure and rows have times."""
    return PROFILE.run_to_failure and {MACHINE, TIMESTAMP} <= set(df.columns)


def _by_machine(df: pd.DataFrame, fraction: float, seed: int) -> frozenset[int]:
    """All rows of a seeded `fraction` of the machines, drawn among machines with and without failures
    separately (each group gives at least one when it has two or more)."""
    failed = df.groupby(df[MACHINE].astype(str))[LABEL_COLUMN].max().astype("int64").sort_index()
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for value in (1, 0):
        machines = failed.index[failed.to_numpy() == value].to_numpy()
        take = round(len(machines) * fraction)
        take = max(take, 1) if len(machines) >= 2 else 0
        chosen += list(rng.choice(machines, size=take, replace=False)) if take else []
    rows = df[df[MACHINE].astype(str).isin(chosen)]
    return frozenset(int(i) for i in rows["id"])


def _by_time(df: pd.DataFrame, fraction: float) -> frozenset[int]:
    """Each machine's latest `fraction` of readings (at least one)."""
    ordered = df.sort_values([MACHINE, TIMESTAMP], kind="stable")
    rank = ordered.groupby(ordered[MACHINE].astype(str)).cumcount(ascending=False)
    size = ordered.groupby(ordered[MACHINE].astype(str))["id"].transform("size")
    held = rank < np.maximum(1, np.round(size * fraction))
    return frozenset(int(i) for i in ordered.loc[held, "id"])


def time_honest_ids(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> frozenset[int]:
    """Ids of the time-honest holdout of `df` (machine_id, timestamp, id, label): whole machines when the
    fleet has at least MACHINES_PER_HOLDOUT_SHARE / fraction machines, else each machine's latest `fraction`
    of readings (`honest_training_rows` then leaves out one horizon before them)."""
    _require(df, "the frame to split")
    if not 0.0 < fraction < 1.0:
        raise MfdError(f"holdout fraction must be between 0 and 1, got {fraction}")
    machines = df[MACHINE].astype(str).nunique()
    if machines >= MACHINES_PER_HOLDOUT_SHARE / fraction:
        return _by_machine(df, fraction, seed)
    return _by_time(df, fraction)


def honest_training_rows(df: pd.DataFrame, holdout: pd.DataFrame, gap: pd.Timedelta) -> pd.DataFrame:
    """`df` without the holdout's rows and without any reading of a holdout machine later than that
    machine's first holdout reading minus `gap` (no label trained on reaches into the holdout's time)."""
    held = frozenset(int(i) for i in holdout["id"])
    out = without_holdout(df, held)
    if not len(holdout) or not {MACHINE, TIMESTAMP} <= set(out.columns):
        return out
    first = pd.to_datetime(holdout[TIMESTAMP], utc=True).groupby(holdout[MACHINE].astype(str)).min()
    limit = out[MACHINE].astype(str).map(first - gap)
    late = limit.notna() & (pd.to_datetime(out[TIMESTAMP], utc=True) > limit)
    return out[~late.to_numpy()].reset_index(drop=True)


def holdout_split(df: pd.DataFrame, fraction: float = 0.2, seed: int = 0) -> Split:
    """`df` split into its training part and its holdout: time-honest (`time_honest_ids`, the gap one
    horizon) where the profile runs machines to failure, else the label-stratified `holdout_ids`."""
    honest = time_honest(df)
    held = time_honest_ids(df, fraction, seed) if honest else holdout_ids(df, fraction, seed)
    in_holdout = df["id"].astype("int64").isin(held)
    holdout = df[in_holdout].reset_index(drop=True)
    if honest:
        return Split(train=honest_training_rows(df, holdout, PROFILE.horizon), holdout=holdout)
    return Split(train=df[~in_holdout].reset_index(drop=True), holdout=holdout)


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
