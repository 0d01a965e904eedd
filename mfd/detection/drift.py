"""Drift of recent readings against a reference (the training data): PSI and two-sample KS per feature."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from scipy.stats import ks_2samp
from sqlalchemy.engine import Engine

from mfd.detection.batches import BATCH_COLUMNS, invalid_reasons, read_batch
from mfd.features import PHYSICS_COLUMNS, add_physics
from mfd.profiles.physics import plant_physics, reference_readings
from mfd.schema import PROFILE, SENSOR_COLUMNS
from mfd.storage.readings import readings

DRIFT_FEATURES: tuple[str, ...] = (*SENSOR_COLUMNS, *PHYSICS_COLUMNS)
# Features that follow a plant's slow walk (its physics' SLOW_FEATURES, e.g. AI4I's temperatures): a window of a
# few hours covers a narrow slice of the reference's range, so its shape differs even when nothing changed.
# They drift when their mean moves more than MEAN_SHIFT_SD reference standard deviations; PSI and KS judge
# every other feature.
_PHYSICS = plant_physics()
SLOW_FEATURES: frozenset[str] = frozenset(_PHYSICS.SLOW_FEATURES) if _PHYSICS is not None else frozenset()
MEAN_SHIFT_SD = 1.0
MAX_PANELS = 8  # histograms in the report's figure
_EPS = 1e-4


def reference_for_drift(engine: Engine, rows: int) -> tuple[pd.DataFrame, str]:
    """The plant's reference data set (AI4I 2020 for `ai4i`), else its oldest `rows` valid stored
    readings; with a line saying which."""
    reference = reference_readings()
    if reference is not None:
        return reference, f"{PROFILE.name} reference data ({len(reference):,} rows)"
    with engine.connect() as conn:
        ids = conn.execute(sa.select(readings.c.id).order_by(readings.c.id).limit(rows)).scalars().all()
    if not ids:
        return pd.DataFrame(columns=list(BATCH_COLUMNS)), "no stored readings"
    df = read_batch(engine, min(ids), max(ids))
    df = df[invalid_reasons(df).isna()].reset_index(drop=True)
    return df, f"the oldest {len(df):,} valid stored readings (ids {min(ids)}..{max(ids)})"


def read_recent(engine: Engine, rows: int) -> pd.DataFrame:
    """The newest `rows` readings (by id) that pass validation, oldest first."""
    with engine.connect() as conn:
        ids = (
            conn.execute(sa.select(readings.c.id).order_by(readings.c.id.desc()).limit(rows)).scalars().all()
        )
    if not ids:
        return pd.DataFrame(columns=list(BATCH_COLUMNS))
    df = read_batch(engine, min(ids), max(ids))
    return df[invalid_reasons(df).isna()].reset_index(drop=True)


def population_stability(reference: np.ndarray, recent: np.ndarray, bins: int = 10) -> float:
    """PSI over the reference's quantile bins: sum((q - p) * ln(q / p)); 0.1 is a shift, 0.25 a large one."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    p = np.histogram(reference, edges)[0] / len(reference) + _EPS
    q = np.histogram(recent, edges)[0] / len(recent) + _EPS
    return float(np.sum((q - p) * np.log(q / p)))


def drift_table(
    reference: pd.DataFrame, recent: pd.DataFrame, psi_threshold: float, ks_threshold: float
) -> pd.DataFrame:
    """Per feature (sensors and physics features): PSI, KS statistic and p-value, means, the mean's shift in
    reference standard deviations, and `drifted`: PSI > psi_threshold or the KS statistic > ks_threshold,
    or for the slow temperatures (SLOW_FEATURES) a mean shift above MEAN_SHIFT_SD."""
    ref, new = add_physics(reference), add_physics(recent)
    rows = []
    for col in DRIFT_FEATURES:
        a, b = ref[col].to_numpy(dtype="float64"), new[col].to_numpy(dtype="float64")
        ks = ks_2samp(a, b)
        psi = population_stability(a, b)
        shift = abs(float(b.mean() - a.mean())) / max(float(a.std()), _EPS)
        if col in SLOW_FEATURES:
            drifted = shift > MEAN_SHIFT_SD
        else:
            drifted = psi > psi_threshold or ks.statistic > ks_threshold
        rows.append(
            {
                "feature": col,
                "psi": psi,
                "ks_statistic": float(ks.statistic),
                "ks_pvalue": float(ks.pvalue),
                "reference_mean": float(a.mean()),
                "recent_mean": float(b.mean()),
                "mean_shift_sd": shift,
                "drifted": bool(drifted),
            }
        )
    return pd.DataFrame(rows).set_index("feature")


def drift_figure(
    reference: pd.DataFrame, recent: pd.DataFrame, table: pd.DataFrame, panels: int = MAX_PANELS
) -> Figure:
    """Reference vs recent histograms of at most `panels` features (drifted first, then by PSI), titled
    with PSI and KS."""
    ref, new = add_physics(reference), add_physics(recent)
    shown = table.sort_values(["drifted", "psi"], ascending=False).index[:panels]
    rows = -(-len(shown) // 2)
    fig, axes = plt.subplots(rows, 2, figsize=(8, 2.75 * rows), squeeze=False)  # narrow and tall
    for ax, col in zip(axes.flat, shown, strict=False):
        both = np.concatenate([ref[col].to_numpy(dtype="float64"), new[col].to_numpy(dtype="float64")])
        low, high = np.nanmin(both), np.nanmax(both)
        bins = np.linspace(low, high, 40) if high > low else np.linspace(low - 0.5, high + 0.5, 3)
        ax.hist(ref[col], bins=bins, density=True, alpha=0.5, label="reference")
        ax.hist(new[col], bins=bins, density=True, alpha=0.5, label="recent")
        row = table.loc[col]
        ax.set_title(
            f"{col}\nPSI {row.psi:.3f}  KS {row.ks_statistic:.3f}", color="red" if row.drifted else "black"
        )
    for ax in axes.flat[len(shown) :]:
        ax.set_visible(False)
    if len(table) > len(shown):
        fig.suptitle(
            f"{len(shown)} of {len(table)} features: drifted first, then by PSI", y=0.995, fontsize=9
        )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=2, frameon=False)  # above the panels, over no bars
    return fig
