"""Sensor analogs of image corruptions, applied to a frame of readings in time order, and the corruption
augmentation that adds selected corrupted copies of training rows.

Each corruption returns a copy and changes only the sensor cells it names (clipped to mfd.schema ranges):
- `dropout_boxes` (random boxes): rectangles of rows x sensors replaced by the sensor's mean;
- `block_shuffle` (mosaic): blocks of consecutive rows swap places within the given sensors;
- `spike_line` (random line): spikes of +-`magnitude` standard deviations along one sensor;
- `stuck_values`: one sensor repeats one value over a segment;
- `drift`: one sensor ramps away over a segment;
- `mixed`: two of the above, drawn at random;
- `sensor_noise`: independent Gaussian measurement noise per cell (the shifted holdouts and jittered
  training copies of `mfd.modeling.shifts`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.model_selection import cross_val_predict
from sklearn.preprocessing import StandardScaler

from mfd.augmentation.frames import clip_sensors, combine, require_inputs
from mfd.augmentation.selection import Strategy, select_rows
from mfd.errors import MfdError
from mfd.features import feature_matrix
from mfd.schema import LABEL_COLUMN, SENSOR_COLUMNS

Kind = Literal["dropout", "mosaic", "spike", "stuck", "drift", "mixed"]
Reference = Literal["minority", "misclassified"]


def _segment(n_rows: int, length: int, rng: np.random.Generator) -> slice:
    length = max(1, min(length, n_rows))
    start = int(rng.integers(0, n_rows - length + 1))
    return slice(start, start + length)


def dropout_boxes(
    df: pd.DataFrame,
    rng: np.random.Generator,
    n_boxes: int = 3,
    max_rows: int = 10,
    columns: tuple[str, ...] = SENSOR_COLUMNS,
) -> pd.DataFrame:
    """`n_boxes` boxes (up to `max_rows` consecutive rows x a random non-empty subset of `columns`) set to
    each column's mean, like cutout on an image."""
    out = df.copy()
    means = df[list(columns)].mean()
    for _ in range(n_boxes):
        rows = _segment(len(df), int(rng.integers(1, max_rows + 1)), rng)
        cols = list(rng.choice(columns, size=int(rng.integers(1, len(columns) + 1)), replace=False))
        for col in cols:
            out.iloc[rows, out.columns.get_loc(col)] = means[col]
    return clip_sensors(out, columns)


def block_shuffle(
    df: pd.DataFrame, rng: np.random.Generator, block_rows: int = 5, columns: tuple[str, ...] = SENSOR_COLUMNS
) -> pd.DataFrame:
    """Blocks of `block_rows` consecutive rows permuted within `columns` (a mosaic); each column keeps its
    values, only their rows move, and the other columns stay put."""
    out = df.copy()
    blocks = np.array_split(np.arange(len(df)), max(1, -(-len(df) // block_rows)))
    order = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
    out[list(columns)] = df[list(columns)].to_numpy()[order]
    return out


def spike_line(
    df: pd.DataFrame, rng: np.random.Generator, column: str, n_spikes: int = 5, magnitude: float = 4.0
) -> pd.DataFrame:
    """`n_spikes` rows of `column` pushed up or down by `magnitude` standard deviations (a random line)."""
    out = df.copy()
    rows = rng.choice(len(df), size=min(n_spikes, len(df)), replace=False)
    signs = rng.choice([-1.0, 1.0], size=len(rows))
    col = out.columns.get_loc(column)
    out.iloc[rows, col] = out.iloc[rows, col].to_numpy() + signs * magnitude * (df[column].std() or 1.0)
    return clip_sensors(out, (column,))


def stuck_values(df: pd.DataFrame, rng: np.random.Generator, column: str, length: int = 10) -> pd.DataFrame:
    """`column` stuck at the value of a segment's first row for the rest of that segment."""
    out = df.copy()
    rows = _segment(len(df), length, rng)
    col = out.columns.get_loc(column)
    out.iloc[rows, col] = df.iloc[rows.start, col]
    return out


def drift(
    df: pd.DataFrame, rng: np.random.Generator, column: str, length: int = 20, magnitude: float = 3.0
) -> pd.DataFrame:
    """`column` drifting linearly over a segment to `magnitude` standard deviations off, up or down."""
    out = df.copy()
    rows = _segment(len(df), length, rng)
    n = rows.stop - rows.start
    ramp = np.linspace(0.0, 1.0, n + 1)[1:] * rng.choice([-1.0, 1.0]) * magnitude * (df[column].std() or 1.0)
    col = out.columns.get_loc(column)
    out.iloc[rows, col] = out.iloc[rows, col].to_numpy() + ramp
    return clip_sensors(out, (column,))


def sensor_noise(
    df: pd.DataFrame, rng: np.random.Generator, sd: dict[str, float | np.ndarray]
) -> pd.DataFrame:
    """Gaussian noise of standard deviation `sd[column]` (a number, or one per row) added to each named
    sensor column, clipped to the physical ranges; every other column is left as it is."""
    out = df.copy()
    for col, scale in sd.items():
        values = out[col].to_numpy(dtype="float64")
        out[col] = values + rng.normal(0.0, 1.0, len(values)) * np.asarray(scale, dtype="float64")
    return clip_sensors(out, tuple(sd))


def _one(kind: str, df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    column = str(rng.choice(SENSOR_COLUMNS))
    if kind == "dropout":
        return dropout_boxes(df, rng)
    if kind == "mosaic":
        size = int(rng.integers(1, len(SENSOR_COLUMNS) + 1))
        return block_shuffle(df, rng, columns=tuple(rng.choice(SENSOR_COLUMNS, size=size, replace=False)))
    if kind == "spike":
        return spike_line(df, rng, column)
    if kind == "stuck":
        return stuck_values(df, rng, column)
    return drift(df, rng, column)


SINGLE_KINDS: tuple[str, ...] = ("dropout", "mosaic", "spike", "stuck", "drift")
KINDS: tuple[str, ...] = (*SINGLE_KINDS, "mixed")


def mixed(df: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Two different corruptions drawn at random, one after the other (sensor columns only)."""
    for kind in rng.choice(SINGLE_KINDS, size=2, replace=False):
        df = _one(str(kind), df, rng)
    return df


def corrupt(df: pd.DataFrame, kind: Kind, rng: np.random.Generator) -> pd.DataFrame:
    """`df` with one corruption of `kind` (on randomly drawn sensors, where the kind takes one)."""
    if kind not in KINDS:
        raise MfdError(f"unknown corruption {kind!r}; choose from {list(KINDS)}")
    return mixed(df, rng) if kind == "mixed" else _one(kind, df, rng)


def corrupted_candidates(
    train: pd.DataFrame, kind: Kind, chunk_rows: int = 50, seed: int = 0
) -> pd.DataFrame:
    """Corrupted copies of the training rows that some corruption changed: rows in time order per machine,
    cut into chunks of `chunk_rows`, each chunk corrupted on its own. Labels and types are kept."""
    rng = np.random.default_rng(seed)
    order = [c for c in ("machine_id", "timestamp", "id") if c in train.columns]
    ordered = train.sort_values(order, kind="stable").reset_index(drop=True) if order else train
    chunks = [ordered.iloc[i : i + chunk_rows] for i in range(0, len(ordered), chunk_rows)]
    corrupted = pd.concat([corrupt(chunk, kind, rng) for chunk in chunks])
    changed = ~np.isclose(corrupted[list(SENSOR_COLUMNS)], ordered[list(SENSOR_COLUMNS)]).all(axis=1)
    return corrupted[changed].reset_index(drop=True)


def reference_rows(train: pd.DataFrame, reference: Reference, seed: int = 0) -> pd.DataFrame:
    """The rows selection measures distance to: the failures, or the rows a 3-fold cross-validated random
    forest misclassifies (falling back to the failures when it gets every row right)."""
    failures = train[train[LABEL_COLUMN].astype("int64") == 1]
    if reference == "minority":
        return failures
    if reference != "misclassified":
        raise MfdError(f"unknown selection reference {reference!r}; choose 'minority' or 'misclassified'")
    y = train[LABEL_COLUMN].astype("int64").to_numpy()
    model = RandomForestClassifier(n_estimators=50, n_jobs=1, random_state=seed)
    predicted = cross_val_predict(model, feature_matrix(train).to_numpy(), y, cv=3)
    wrong = train[predicted != y]
    return wrong if len(wrong) else failures


def corruption_augment(
    train: pd.DataFrame,
    n_rows: int = 1000,
    kind: Kind = "mixed",
    strategy: Strategy = "cosine",
    reference: Reference = "minority",
    seed: int = 0,
) -> pd.DataFrame:
    """`train` plus `n_rows` corrupted copies of its rows, chosen by `strategy` (distances measured on the
    standardized model inputs, to the `reference` rows)."""
    require_inputs(train, "the corruption's training rows")
    if n_rows < 0:
        raise MfdError(f"n_rows must be zero or more, got {n_rows}")
    candidates = corrupted_candidates(train, kind, seed=seed)
    scaler = StandardScaler().fit(feature_matrix(train).to_numpy())
    picked = select_rows(
        scaler.transform(feature_matrix(candidates).to_numpy()),
        scaler.transform(feature_matrix(reference_rows(train, reference, seed)).to_numpy()),
        n_rows,
        strategy,
        seed,
    )
    return combine(train, candidates.iloc[picked])
