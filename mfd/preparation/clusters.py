"""Machine clusters: KMeans on the standardized model inputs, an MDS map of a sample for the eye."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.cluster import KMeans
from sklearn.manifold import MDS
from sklearn.preprocessing import StandardScaler

from mfd.errors import MfdError
from mfd.features import feature_matrix
from mfd.schema import LABEL_COLUMN


@dataclass(frozen=True)
class Clusters:
    """`labels` per input row; `table` per cluster (size, failures, failure_rate); `embedding` the 2-D
    MDS coordinates (x, y, cluster, machine_failure) of a sample of rows, indexed by input row position."""

    labels: np.ndarray
    table: pd.DataFrame
    embedding: pd.DataFrame
    method: str


def stratified_sample(df: pd.DataFrame, size: int, seed: int) -> pd.DataFrame:
    """At most `size` rows, failures and non-failures in their original proportion."""
    if len(df) <= size:
        return df
    fraction = size / len(df)
    parts = [
        group.sample(n=max(1, round(len(group) * fraction)), random_state=seed)
        for _, group in df.groupby(df[LABEL_COLUMN].fillna(0).astype(int))
    ]
    return pd.concat(parts).sort_index()


def cluster_machines(
    df: pd.DataFrame, n_clusters: int = 4, sample_size: int = 1500, seed: int = 0
) -> Clusters:
    """KMeans with `n_clusters` on every row; metric MDS (SMACOF, classical-MDS start) on a stratified
    sample of at most `sample_size` rows, because MDS costs O(n^2) memory and time."""
    if n_clusters < 2:
        raise MfdError(f"n_clusters must be at least 2, got {n_clusters}")
    if sample_size < n_clusters:
        raise MfdError(f"sample_size ({sample_size}) must be at least n_clusters ({n_clusters})")
    if len(df) < n_clusters:
        raise MfdError(f"cannot form {n_clusters} clusters from {len(df)} rows; lower n_clusters")
    df = df.reset_index(drop=True)
    scaled = pd.DataFrame(StandardScaler().fit_transform(feature_matrix(df).to_numpy()), index=df.index)
    labels = KMeans(n_clusters=n_clusters, n_init=10, random_state=seed).fit_predict(scaled)
    failure = df[LABEL_COLUMN].fillna(0).astype(int).to_numpy()
    table = (
        pd.DataFrame({"cluster": labels, "failure": failure})
        .groupby("cluster")
        .agg(size=("failure", "size"), failures=("failure", "sum"))
        .reindex(range(n_clusters), fill_value=0)
    )
    table["failure_rate"] = table["failures"] / table["size"].where(table["size"] > 0)
    table["failure_rate"] = table["failure_rate"].fillna(0.0)

    sample = stratified_sample(df, sample_size, seed)
    coords = MDS(n_components=2, init="classical_mds", max_iter=300, random_state=seed).fit_transform(
        scaled.loc[sample.index]
    )
    embedding = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "cluster": pd.Series(labels, index=df.index).loc[sample.index].to_numpy(),
            LABEL_COLUMN: failure[sample.index],
        },
        index=sample.index,
    )
    method = (
        f"KMeans (k={n_clusters}, seed {seed}) on all {len(df)} standardized rows; metric MDS "
        f"(SMACOF, classical-MDS init) on a stratified sample of {len(sample)} rows"
    )
    return Clusters(labels=labels, table=table, embedding=embedding, method=method)


def cluster_scatter(clusters: Clusters) -> Figure:
    """The MDS map coloured by cluster, failures marked with a black cross."""
    fig = Figure(figsize=(7, 6))
    ax = fig.subplots()
    emb = clusters.embedding
    points = ax.scatter(emb["x"], emb["y"], c=emb["cluster"], cmap="tab10", s=8, alpha=0.6)
    failed = emb[emb[LABEL_COLUMN] == 1]
    ax.scatter(failed["x"], failed["y"], marker="x", c="black", s=24, label="failure")
    ax.add_artist(ax.legend(*points.legend_elements(), title="cluster", loc="upper right"))
    ax.legend(loc="upper left")
    ax.set_title(f"MDS map of {len(emb)} sampled readings")
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    return fig
