"""Sequence models on per-machine windows: an LSTM autoencoder trained on normal windows (anomaly score =
reconstruction error) and LSTM, GRU, BiLSTM and Conv1D-BiLSTM classifiers, each with a threshold chosen
on the validation windows and scored on test windows no fit saw.

torch is imported on first training (`mfd.modeling.sequence.nets`), so loading the code location does not pay for it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mfd.errors import MfdError
from mfd.modeling.budget import NO_DEADLINE, Deadline
from mfd.modeling.early_warning import figures, lead_of
from mfd.modeling.metrics import best_threshold, scores
from mfd.modeling.sequence.architectures import ARCHITECTURES, AUTOENCODER
from mfd.modeling.sequence.windows import WindowSplit
from mfd.schema import PROFILE

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class SequenceSettings:
    """Network width and training loop; the defaults train all five architectures on ~20,000 generated
    readings in about 15 s on one core (asset included)."""

    hidden: int = 32
    epochs: int = 15
    patience: int = 3
    batch_size: int = 128
    learning_rate: float = 3e-3
    max_pos_weight: float = 10.0
    threads: int = 1
    seed: int = 0
    time_budget_s: float | None = None  # per architecture: no epoch starts once it is spent


@dataclass
class SequenceResult:
    """One trained architecture: the network, its validation threshold, its test scores and its costs."""

    architecture: str
    network: nn.Module
    threshold: float
    scores: dict[str, float]
    test_y: np.ndarray
    test_score: np.ndarray
    losses: pd.DataFrame
    fit_seconds: float
    latency: dict[str, float]

    @property
    def epochs_run(self) -> int:
        return len(self.losses)

    def metrics(self) -> dict[str, float]:
        """Everything measured, flat: test_* scores, threshold, fit seconds, epochs and latency."""
        return {
            **{f"test_{k}": v for k, v in self.scores.items()},
            "threshold": self.threshold,
            "fit_seconds": self.fit_seconds,
            "epochs_run": self.epochs_run,
            **self.latency,
        }


def check_architectures(names: list[str]) -> None:
    """Raise MfdError naming the choices when `names` is empty or holds an unknown architecture."""
    unknown = [n for n in names if n not in ARCHITECTURES]
    if unknown or not names:
        raise MfdError(
            f"unknown or no architecture(s) {', '.join(unknown) or '[]'}; choose from {', '.join(ARCHITECTURES)}"
        )


def train_sequence_model(
    architecture: str,
    split: WindowSplit,
    settings: SequenceSettings | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> SequenceResult:
    """Fit `architecture` on the training windows (the autoencoder on the normal ones only, with early
    stopping on the normal validation windows), choose the F1-best threshold on all validation windows and
    score the test windows, all by `deadline` (the epochs stop early enough for the scoring, see
    `nets.fit`; the first epoch always runs)."""
    check_architectures([architecture])
    problem = split.problem()
    if problem:
        raise MfdError(f"cannot train sequence models: {problem}")
    import torch

    from mfd.modeling.sequence import nets
    from mfd.torch_threads import torch_threads

    settings = settings or SequenceSettings()
    train, validation = split.train, split.validation
    if architecture == AUTOENCODER:
        train, validation = train.subset(train.y == 0), validation.subset(validation.y == 0)
    loop = {k: v for k, v in asdict(settings).items() if k not in ("hidden", "threads")}
    with torch_threads(settings.threads), torch.random.fork_rng():
        torch.manual_seed(settings.seed)
        started = time.perf_counter()
        network = nets.build_network(architecture, train, settings.hidden)
        losses = nets.fit(network, train, validation, **loop, deadline=deadline)
        fit_seconds = time.perf_counter() - started
        threshold = best_threshold(split.validation.y, nets.score(network, split.validation.x))
        test_score = nets.score(network, split.test.x)
        latency = nets.latency(network, split.test)
    return SequenceResult(
        architecture=architecture,
        network=network,
        threshold=threshold,
        scores=scores(split.test.y, test_score, threshold) | _lead(split, test_score, threshold),
        test_y=split.test.y,
        test_score=test_score,
        losses=losses,
        fit_seconds=fit_seconds,
        latency=latency,
    )


def _lead(split: WindowSplit, test_score: np.ndarray, threshold: float) -> dict[str, float]:
    """Lead-time figures of the test windows' scores (each at its last reading), where readings form
    machine series ending in failures (the profile runs machines to failure); else none."""
    if not PROFILE.run_to_failure or split.test_rows is None or not len(split.test_rows):
        return {}
    return figures(lead_of(split.test_rows, test_score, threshold))


def comparison_table(results: list[SequenceResult]) -> pd.DataFrame:
    """One row per architecture, best first: by the share of failures warned in time (then fewer false
    alarms) where lead time is measured, else by test PR AUC: ROC AUC, PR AUC, F1 and recall at its
    threshold, the lead-time figures, fit seconds, epochs run, latency per window and per 1,000 windows."""
    rows = [
        {
            "architecture": r.architecture,
            **{k: r.scores[k] for k in ("roc_auc", "pr_auc", "f1", "recall")},
            **{k: v for k, v in r.scores.items() if k.startswith("lead_")},
            "fit_s": r.fit_seconds,
            "epochs": r.epochs_run,
            "latency_window_ms": r.latency["latency_window_ms"],
            "latency_1k_ms": r.latency["latency_1k_ms"],
        }
        for r in results
    ]
    table = pd.DataFrame(rows).set_index("architecture")
    if "lead_share_warned" in table.columns:
        order = ["lead_share_warned", "lead_false_alarms_per_machine_day", "pr_auc"]
        return table.sort_values(order, ascending=[False, True, False])
    return table.sort_values("pr_auc", ascending=False)
