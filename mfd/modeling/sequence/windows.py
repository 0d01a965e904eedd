"""Per-machine sliding windows over the model features, split in time so that no held-out window shares a
reading with a training window.

Each machine's labelled readings, ordered by timestamp, are cut into three consecutive segments (train,
validation, test) and windows are built inside a segment only: a window never crosses machines nor
segments. Where machines run to failure (the profile's `run_to_failure`: failures only at the end of each
life, so a machine's early segments hold one class only) whole machines go to one part each instead
(seeded), so every part has lives ending in failures. A window of length W ending at reading t holds the features of readings t-W+1..t; its label is
a failure at t or at one of the next `horizon` readings of the same segment (horizon 0: the last reading's
own label, what the tabular model predicts). Rows without a per-machine series (a machine with fewer
readings than a window needs, e.g. AI4I, where every product id is one reading) are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from mfd.features import FEATURE_COLUMNS, feature_array
from mfd.profiles import MACHINE, TIMESTAMP
from mfd.schema import LABEL_COLUMN, PROFILE

PARTS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class Windows:
    """Windows as arrays: `x` (windows x W x FEATURE_COLUMNS, float32), `y` (0/1), the machine and the
    positions (in the ordered series frame) of each window's first and last reading."""

    x: np.ndarray
    y: np.ndarray
    machine: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    @property
    def failures(self) -> int:
        return int(self.y.sum())

    def subset(self, keep: np.ndarray) -> Windows:
        """The windows where `keep` (a boolean mask) is true."""
        return Windows(self.x[keep], self.y[keep], self.machine[keep], self.first[keep], self.last[keep])


@dataclass(frozen=True)
class WindowSplit:
    """Train, validation and test windows plus what the split used and left out."""

    train: Windows
    validation: Windows
    test: Windows
    window: int
    horizon: int
    machines: int
    rows_used: int
    rows_left_out: int
    # Per test window: its machine, the time of its last reading and its label (lead time is measured on it).
    test_rows: pd.DataFrame | None = None

    def parts(self) -> dict[str, Windows]:
        return {"train": self.train, "validation": self.validation, "test": self.test}

    def summary(self) -> pd.DataFrame:
        """Windows and failures per part."""
        rows = [{"part": k, "windows": len(w), "failures": w.failures} for k, w in self.parts().items()]
        return pd.DataFrame(rows).set_index("part")

    def bounded(self, max_train: int | None, seed: int) -> WindowSplit:
        """This split with at most `max_train` training windows: every failure window (up to half of them)
        and a seeded sample of the others; validation and test windows stay as they are."""
        if max_train is None or len(self.train) <= max_train:
            return self
        rng = np.random.default_rng(seed)
        failures, normal = np.flatnonzero(self.train.y == 1), np.flatnonzero(self.train.y == 0)
        failures = rng.choice(failures, min(len(failures), max_train // 2), replace=False)
        normal = rng.choice(normal, max_train - len(failures), replace=False)
        keep = np.zeros(len(self.train), dtype=bool)
        keep[np.concatenate([failures, normal])] = True
        return replace(self, train=self.train.subset(keep))

    def problem(self) -> str | None:
        """Why these windows cannot train and score a model, or None if they can."""
        if self.machines == 0:
            return (
                f"no per-machine series: no machine has enough timestamped readings for a {self.window}-reading "
                f"window in each of its train, validation and test segments ({self.rows_left_out} labelled "
                "rows left out; AI4I rows are one reading per product id)"
            )
        short = [k for k, w in self.parts().items() if w.failures == 0 or w.failures == len(w)]
        if short:
            return f"{' and '.join(short)} window(s) hold one class only: sequence models need both"
        return None


def machine_series(df: pd.DataFrame) -> pd.DataFrame:
    """The labelled rows with a machine id, a timestamp and every feature, ordered by machine then time."""
    keep = df[LABEL_COLUMN].notna() & df["machine_id"].notna() & df["timestamp"].notna()
    keep &= np.isfinite(feature_array(df)).all(axis=1)
    return df[keep].sort_values(["machine_id", "timestamp"], kind="stable").reset_index(drop=True)


def _segment_windows(
    features: np.ndarray, labels: np.ndarray, start: int, stop: int, window: int, stride: int, horizon: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window start positions, windows and labels inside rows start..stop-1 of one machine."""
    last = np.arange(start + window - 1, stop - horizon, stride)
    if last.size == 0:
        return last, np.empty((0, window, features.shape[1]), "float32"), np.empty(0, "int64")
    x = sliding_window_view(features[start:stop], window, axis=0)[last - window + 1 - start]
    ahead = sliding_window_view(labels[start:stop], horizon + 1)[last - start]
    return last - window + 1, x.transpose(0, 2, 1).astype("float32"), ahead.max(axis=1).astype("int64")


def _windows(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], window: int) -> Windows:
    if not parts:
        empty = np.empty(0, "int64")
        return Windows(
            np.empty((0, window, len(FEATURE_COLUMNS)), "float32"), empty, empty.astype(object), empty, empty
        )
    first = np.concatenate([p[0] for p in parts])
    return Windows(
        x=np.concatenate([p[1] for p in parts]),
        y=np.concatenate([p[2] for p in parts]),
        machine=np.concatenate([np.full(len(p[0]), p[3], dtype=object) for p in parts]),
        first=first,
        last=first + window - 1,
    )


def _machine_parts(machines: list[str], validation_fraction: float, test_fraction: float, seed: int) -> dict:
    """Machine -> part: a seeded `test_fraction` and `validation_fraction` of the machines (one each at least
    when there are three or more), the rest train."""
    order = np.random.default_rng(seed).permutation(len(machines))
    n = len(machines)
    test = max(1, round(n * test_fraction)) if n >= 3 else 0
    validation = max(1, round(n * validation_fraction)) if n >= 3 else 0
    parts = ["test"] * test + ["validation"] * validation + ["train"] * (n - test - validation)
    return {machines[i]: part for i, part in zip(order, parts, strict=True)}


def split_windows(
    df: pd.DataFrame,
    *,
    window: int = 20,
    stride: int = 2,
    horizon: int = 0,
    validation_fraction: float = 0.2,
    test_fraction: float = 0.2,
    by_machine: bool | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, WindowSplit]:
    """The ordered series frame (`machine_series`) and its windows, split in time per machine: the first
    readings train, the next `validation_fraction` validate, the last `test_fraction` test. Training
    windows start every `stride` readings; validation and test windows end at every reading, as a
    deployed model would score them. `by_machine` (default: the profile runs machines to failure) puts
    whole machines in one part each (seeded with `seed`)."""
    if window < 2 or stride < 1 or horizon < 0:
        raise ValueError(f"need window >= 2, stride >= 1, horizon >= 0; got {window}, {stride}, {horizon}")
    if not (0 < validation_fraction and 0 < test_fraction and validation_fraction + test_fraction < 1):
        raise ValueError("validation and test fractions must be positive and sum to less than 1")
    series = machine_series(df)
    features = feature_array(series)
    labels = series[LABEL_COLUMN].to_numpy(dtype="int64")
    collected: dict[str, list] = {part: [] for part in PARTS}
    machines = rows_used = 0
    bounds = series.groupby("machine_id", sort=False).indices
    whole = PROFILE.run_to_failure if by_machine is None else by_machine
    owner = (
        _machine_parts([str(m) for m in bounds], validation_fraction, test_fraction, seed) if whole else {}
    )
    for machine, rows in bounds.items():
        start, n = int(rows[0]), len(rows)
        cuts = [0, int(n * (1 - validation_fraction - test_fraction)), int(n * (1 - test_fraction)), n]
        segments = list(zip(PARTS, cuts, cuts[1:], strict=False))
        if whole:
            segments = [(owner[str(machine)], 0, n)]
        if min(b - a for _, a, b in segments) < window + horizon:
            continue
        machines, rows_used = machines + 1, rows_used + n
        for part, a, b in segments:
            step = stride if part == "train" else 1
            first, x, y = _segment_windows(features, labels, start + a, start + b, window, step, horizon)
            collected[part].append((first, x, y, str(machine)))
    test = _windows(collected["test"], window)
    test_rows = (
        series.iloc[test.last][[MACHINE, TIMESTAMP]].reset_index(drop=True).assign(**{LABEL_COLUMN: test.y})
    )
    split = WindowSplit(
        *(_windows(collected[part], window) for part in PARTS),
        window=window,
        horizon=horizon,
        machines=machines,
        rows_used=rows_used,
        rows_left_out=int(df[LABEL_COLUMN].notna().sum()) - rows_used,
        test_rows=test_rows,
    )
    return series, split
