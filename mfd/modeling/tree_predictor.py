"""Tree ensembles flattened into numpy arrays: an exact twin of the predict_proba of a binary RandomForest,
HistGradientBoosting or soft vote of them that scores a small batch in tens of microseconds (scikit-learn pays
~30 us per tree and call), the classifier wrapper that uses it for small batches, and big batches scored in
row chunks on a few threads (`chunked_predict_proba`)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import parallel_config
from scipy.special import expit
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier, VotingClassifier
from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
from threadpoolctl import threadpool_limits

# Where the flat walk stops beating scikit-learn, and from how many rows joblib threads for the forest pay
# for their start-up: measured on AI4I (bench/quality_model.py; the figures are in docs/training.md).
MAX_FLAT_ROWS = 256
MIN_THREADED_ROWS = 8_000
# chunked_predict_proba: rows per chunk (scikit-learn's per-call cost, ~10 us per tree, stays negligible)
CHUNK_ROWS = 16_384


def scoring_threads() -> int:
    """Threads for scoring big batches: both cores of the 2-core host (or this process's one) when free;
    chunks never spin, so when other runs hold the cores a batch costs the CPU of one thread."""
    return min(2, len(os.sched_getaffinity(0)))


TREE_ENSEMBLES = (RandomForestClassifier, HistGradientBoostingClassifier)


@dataclass(frozen=True)
class _Trees:
    """Nodes of consecutive trees, each tree's indices local to itself."""

    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    missing_left: np.ndarray
    leaf: np.ndarray
    value: np.ndarray  # (nodes, 2): class probabilities (forest) or the raw leaf value twice (boosting)
    sizes: list[int]


def _forest(forest: RandomForestClassifier) -> _Trees:
    # sklearn casts X to float32 and compares it, as a double, with the float64 threshold.
    trees = [e.tree_ for e in forest.estimators_]
    return _Trees(
        np.concatenate([t.feature for t in trees]),
        np.concatenate([t.threshold for t in trees]),
        np.concatenate([t.children_left for t in trees]),
        np.concatenate([t.children_right for t in trees]),
        np.concatenate([t.missing_go_to_left for t in trees]).astype(bool),
        np.concatenate([t.children_left == -1 for t in trees]),
        np.concatenate([t.value[:, 0, :] for t in trees]),
        [t.node_count for t in trees],
    )


def _boosting(hgb: HistGradientBoostingClassifier, first_column: int) -> _Trees:
    # HGB compares the float64 input with `<=` num_threshold: it reads columns from `first_column` on.
    nodes = np.concatenate([predictor.nodes for (predictor,) in hgb._predictors])
    if nodes["is_categorical"].any():
        raise ValueError("categorical splits are not flattened")
    return _Trees(
        nodes["feature_idx"] + first_column,
        nodes["num_threshold"],
        nodes["left"].astype(np.intp),
        nodes["right"].astype(np.intp),
        nodes["missing_go_to_left"].astype(bool),
        nodes["is_leaf"].astype(bool),
        np.repeat(nodes["value"][:, None], 2, axis=1),
        [len(predictor.nodes) for (predictor,) in hgb._predictors],
    )


@dataclass(frozen=True)
class _Member:
    """One fitted ensemble among the flat trees: its trees are columns start:stop of the leaf matrix."""

    boosting: bool
    start: int
    stop: int
    baseline: float


def flattenable(estimator: BaseEstimator) -> bool:
    """Whether FlatEnsemble takes `estimator` (unfitted or fitted): a forest, a HistGradientBoosting or a
    soft vote of them."""
    if isinstance(estimator, VotingClassifier):
        return estimator.voting == "soft" and all(
            isinstance(e, TREE_ENSEMBLES) for _, e in estimator.estimators
        )
    return isinstance(estimator, TREE_ENSEMBLES)


class FlatEnsemble:
    """All trees of a fitted binary RandomForest / HistGradientBoosting / soft vote of them in concatenated
    arrays, leaves looping on themselves, walked depth-synchronously for every row and tree at once.

    The walk reads a row widened to [float32-rounded copy, float64 original]: forest splits read the first
    half (as sklearn's float32 cast does), boosting splits the second."""

    def __init__(self, estimator: BaseEstimator) -> None:
        if not flattenable(estimator):
            raise ValueError(f"cannot flatten {type(estimator).__name__}")
        self.vote = isinstance(estimator, VotingClassifier)
        self.weights = estimator.weights if self.vote else None
        self.n_features = int(estimator.n_features_in_)
        members, parts, trees = [], [], 0
        for member in estimator.estimators_ if self.vote else [estimator]:
            if len(member.classes_) != 2:
                raise ValueError("only binary classifiers are flattened")
            boosting = isinstance(member, HistGradientBoostingClassifier)
            part = _boosting(member, self.n_features) if boosting else _forest(member)
            baseline = float(member._baseline_prediction.ravel()[0]) if boosting else 0.0
            members.append(_Member(boosting, trees, trees + len(part.sizes), baseline))
            parts.append(part)
            trees += len(part.sizes)
        self.members = tuple(members)
        self._concatenate(parts)

    def _concatenate(self, parts: list[_Trees]) -> None:
        sizes = np.concatenate([p.sizes for p in parts])
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.intp)
        leaf = np.concatenate([p.leaf for p in parts])
        node = np.arange(len(leaf), dtype=np.intp)
        shift = np.repeat(starts, sizes)
        left = np.where(leaf, node, np.concatenate([p.left for p in parts]) + shift)
        right = np.where(leaf, node, np.concatenate([p.right for p in parts]) + shift)
        # Node i is stored at 2i and 2i + 1 so that children[2i + goes_right] is the next (doubled) node.
        self.roots = 2 * starts
        self.children = (2 * np.column_stack([left, right])).ravel()
        self.feature = np.repeat(np.where(leaf, 0, np.concatenate([p.feature for p in parts])), 2)
        self.threshold = np.repeat(np.concatenate([p.threshold for p in parts]), 2)
        self.missing_right = np.repeat(~np.concatenate([p.missing_left for p in parts]), 2)
        self.value = np.concatenate([p.value for p in parts])
        self.depth = self._depth()

    def _depth(self) -> int:
        nodes, depth = self.roots, 0
        while True:
            reached = np.unique(np.concatenate([self.children[nodes], self.children[nodes + 1]]))
            if np.array_equal(reached, nodes):
                return depth
            nodes, depth = reached, depth + 1

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """(rows, trees): the leaf each row of `x` (float64, rows x features) reaches in each tree."""
        wide = np.concatenate([x.astype(np.float32).astype(np.float64), x], axis=1).ravel()
        offset = (np.arange(len(x)) * 2 * x.shape[1])[:, None]
        nan = bool(np.isnan(x).any())
        node = np.tile(self.roots, (len(x), 1))
        for _ in range(self.depth):
            value = wide[self.feature[node] + offset]
            right = value > self.threshold[node]
            if nan:  # NaN compares False (left): send it where the split sent missing values
                right |= np.isnan(value) & self.missing_right[node]
            node = self.children[node + right]
        return node // 2

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(rows, 2) class probabilities, bit for bit the flattened estimator's."""
        leaves = self.leaves(x)
        probas = [self._member_proba(m, leaves[:, m.start : m.stop]) for m in self.members]
        return np.average(np.asarray(probas), axis=0, weights=self.weights) if self.vote else probas[0]

    def _member_proba(self, member: _Member, leaves: np.ndarray) -> np.ndarray:
        # Summed tree after tree as sklearn does (np.add.accumulate is sequential, np.sum is pairwise).
        if not member.boosting:
            return np.add.accumulate(self.value[leaves], axis=1)[:, -1] / leaves.shape[1]
        raw = np.concatenate([np.full((len(leaves), 1), member.baseline), self.value[leaves, 1]], axis=1)
        proba = np.empty((len(leaves), 2))
        proba[:, 1] = expit(np.add.accumulate(raw, axis=1)[:, -1])
        proba[:, 0] = 1 - proba[:, 1]
        return proba


class FlatTreeClassifier(ClassifierMixin, BaseEstimator):
    """`estimator` (see `flattenable`), fitted as usual; predict_proba scores batches of up to `max_flat_rows`
    rows through its FlatEnsemble twin, bigger ones through scikit-learn, from MIN_THREADED_ROWS rows on with
    the forest's trees spread over as many threads as OpenMP may use (a caller's `threadpool_limits` holds)."""

    def __init__(self, estimator: BaseEstimator, max_flat_rows: int = MAX_FLAT_ROWS) -> None:
        self.estimator = estimator
        self.max_flat_rows = max_flat_rows

    def fit(self, X: object, y: object) -> FlatTreeClassifier:  # noqa: N803 - sklearn API
        self.estimator_ = clone(self.estimator).fit(X, y)
        self.flat_ = FlatEnsemble(self.estimator_)
        self.classes_ = self.estimator_.classes_
        self.n_features_in_ = self.estimator_.n_features_in_
        return self

    def predict_proba(self, X: object) -> np.ndarray:  # noqa: N803 - sklearn API
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_in_:
            raise ValueError(f"expected (rows, {self.n_features_in_}) features, got shape {x.shape}")
        if len(x) <= self.max_flat_rows:
            return self.flat_.predict_proba(x)
        # as many threads as HistGradientBoosting would size its OpenMP loops to
        threads = _openmp_effective_n_threads() if len(x) >= MIN_THREADED_ROWS else 1
        with parallel_config(backend="threading", n_jobs=threads):
            return self.estimator_.predict_proba(x)

    def predict(self, X: object) -> np.ndarray:  # noqa: N803 - sklearn API
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


def chunked_predict_proba(model: Any, rows: Any, threads: int) -> np.ndarray:
    """`model.predict_proba(rows)` (rows: a frame or array) with the rows cut into chunks of CHUNK_ROWS scored
    on `threads` Python threads, each chunk on one OpenMP thread; the result is the one call's, row for row.

    Not OpenMP's own threads: their static schedule and spin-waiting make a thread that the OS deschedules
    (runs side by side, other processes) stall its partner, which measured 3.0 s against 1.1 s on one thread
    for 100k readings on the shared 2-core host. Chunks taken from a queue keep every thread busy with no
    spinning: on free cores the batch takes 1/threads of the time, on busy ones about one thread's CPU.
    scikit-learn's tree predictors release the GIL per chunk. `threads` <= 1 or one chunk: a plain call."""
    n = len(rows)
    if threads <= 1 or n <= CHUNK_ROWS:
        return model.predict_proba(rows)
    take = rows.iloc if hasattr(rows, "iloc") else rows
    chunks = [take[start : start + CHUNK_ROWS] for start in range(0, n, CHUNK_ROWS)]

    def score(chunk: Any) -> np.ndarray:
        # OpenMP's thread count is per calling thread: this limit holds for this worker only.
        with threadpool_limits(1, user_api="openmp"):
            return np.asarray(model.predict_proba(chunk))

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mfd-score") as pool:
        return np.concatenate(list(pool.map(score, chunks)))
