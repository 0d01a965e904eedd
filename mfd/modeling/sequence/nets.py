"""The torch networks behind the sequence models (CPU), their training loop, scoring and latency.

Each network standardizes its input with the mean and scale of the training windows (buffers, so a saved
network takes raw feature windows) and maps a batch of windows (batch x W x features) to one score each:
a failure probability for the classifiers, the mean squared reconstruction error for the autoencoder.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn

from mfd.modeling.budget import NO_DEADLINE, Deadline
from mfd.modeling.sequence.architectures import AUTOENCODER, CLASSIFIERS
from mfd.modeling.sequence.windows import Windows


class _Standardized(nn.Module):
    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def standardize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def _final_state(rnn: nn.RNNBase, x: torch.Tensor) -> torch.Tensor:
    """The last hidden state of the top layer (both directions, concatenated, for a bidirectional net)."""
    _, state = rnn(x)
    hidden = state[0] if isinstance(state, tuple) else state
    return torch.cat(list(hidden[-(2 if rnn.bidirectional else 1) :]), dim=1)


class WindowClassifier(_Standardized):
    """Windows -> failure probability: [Conv1D + ReLU ->] LSTM or GRU [bidirectional] -> last state -> linear."""

    def __init__(
        self, architecture: str, features: int, hidden: int, mean: np.ndarray, scale: np.ndarray
    ) -> None:
        super().__init__(mean, scale)
        if architecture not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {architecture!r}; choose one of {', '.join(CLASSIFIERS)}")
        self.architecture = architecture
        self.conv = (
            nn.Sequential(nn.Conv1d(features, hidden, kernel_size=3, padding=1), nn.ReLU())
            if architecture == "conv1d_bilstm"
            else None
        )
        rnn = nn.GRU if architecture == "gru" else nn.LSTM
        bidirectional = architecture in ("bilstm", "conv1d_bilstm")
        self.rnn = rnn(
            hidden if self.conv else features, hidden, batch_first=True, bidirectional=bidirectional
        )
        self.head = nn.Linear(hidden * (2 if bidirectional else 1), 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        z = self.standardize(x)
        if self.conv is not None:
            z = self.conv(z.transpose(1, 2)).transpose(1, 2)
        return self.head(_final_state(self.rnn, z)).squeeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x))


class WindowAutoencoder(_Standardized):
    """Windows -> reconstruction error: an LSTM encodes the window into its last state, an LSTM decodes
    that state repeated W times back into the (standardized) window."""

    def __init__(self, features: int, hidden: int, mean: np.ndarray, scale: np.ndarray) -> None:
        super().__init__(mean, scale)
        self.architecture = AUTOENCODER
        self.encoder = nn.LSTM(features, hidden, batch_first=True)
        self.decoder = nn.LSTM(hidden, hidden, batch_first=True)
        self.output = nn.Linear(hidden, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Squared error per window (mean over time steps and features) of the standardized window."""
        z = self.standardize(x)
        code = _final_state(self.encoder, z).unsqueeze(1).expand(-1, z.shape[1], -1)
        decoded, _ = self.decoder(code)
        return ((self.output(decoded) - z) ** 2).mean(dim=(1, 2))


def build_network(architecture: str, train: Windows, hidden: int) -> WindowClassifier | WindowAutoencoder:
    """An untrained network whose standardization is fitted on the readings of the training windows."""
    readings = train.x.reshape(-1, train.x.shape[2])
    mean, scale = readings.mean(axis=0), readings.std(axis=0) + 1e-6
    if architecture == AUTOENCODER:
        return WindowAutoencoder(train.x.shape[2], hidden, mean, scale)
    return WindowClassifier(architecture, train.x.shape[2], hidden, mean, scale)


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype="float32"))


def score(network: nn.Module, x: np.ndarray, batch_size: int = 2048) -> np.ndarray:
    """The network's score of every window in `x`, float64."""
    network.eval()
    with torch.inference_mode():
        parts = [network(_tensor(x[i : i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    return np.concatenate(parts).astype("float64")


def _loss_fn(
    network: nn.Module, y: np.ndarray, max_pos_weight: float
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per-batch loss: mean reconstruction error (autoencoder) or BCE with the failures weighted by the
    negative/positive ratio, capped at `max_pos_weight` (classifiers)."""
    if isinstance(network, WindowAutoencoder):
        return lambda x, _: network(x).mean()
    positives = max(float(y.sum()), 1.0)
    bce = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(min((len(y) - positives) / positives, max_pos_weight)))
    return lambda x, target: bce(network.logits(x), target)


def fit(
    network: nn.Module,
    train: Windows,
    validation: Windows,
    *,
    epochs: int,
    patience: int,
    batch_size: int,
    learning_rate: float,
    max_pos_weight: float,
    seed: int,
    time_budget_s: float | None = None,
    deadline: Deadline = NO_DEADLINE,
) -> pd.DataFrame:
    """Adam over shuffled batches (seeded); keeps the weights of the epoch with the lowest validation loss
    and stops after `patience` epochs without improvement, after the epoch that spent `time_budget_s`, or,
    from the second epoch on, at `deadline`: no epoch starts unless it and as long again (the scoring that
    follows) fit before it, and an epoch it cuts short is dropped. Returns the losses per epoch."""
    started = time.perf_counter()
    loss_fn = _loss_fn(network, train.y, max_pos_weight)
    optimizer = torch.optim.Adam(network.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    x, y = _tensor(train.x), torch.from_numpy(train.y.astype("float32"))
    vx, vy = _tensor(validation.x), torch.from_numpy(validation.y.astype("float32"))
    history, best, best_state, waited, epoch_s = [], np.inf, None, 0, 0.0
    for _ in range(epochs):
        if history and deadline.remaining() < 2 * epoch_s:
            break
        epoch_started = time.perf_counter()
        network.train()
        total, cut = 0.0, False
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            if history and deadline.passed():
                cut = True
                break
            optimizer.zero_grad()
            loss = loss_fn(x[batch], y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if cut:
            break
        network.eval()
        with torch.inference_mode():
            valid = loss_fn(vx, vy).item()
        history.append({"train_loss": total / len(x), "validation_loss": valid})
        epoch_s = time.perf_counter() - epoch_started
        if valid < best:
            best, best_state, waited = valid, copy.deepcopy(network.state_dict()), 0
        else:
            waited += 1
            if waited >= patience:
                break
        if time_budget_s is not None and time.perf_counter() - started > time_budget_s:
            break
    network.load_state_dict(best_state)
    network.eval()
    return pd.DataFrame(history).rename_axis("epoch")


def _median_ms(network: nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.inference_mode():
        network(x)  # warm-up
        for _ in range(repeats):
            started = time.perf_counter()
            network(x)
            times.append(time.perf_counter() - started)
    return 1000 * float(np.median(times))


def latency(network: nn.Module, windows: Windows, repeats: int = 30) -> dict[str, float]:
    """In-process scoring latency, median ms: one window (`repeats` calls) and a batch of 1,000 (5 calls)."""
    picks = np.random.default_rng(0).integers(0, len(windows), 1000)
    return {
        "latency_window_ms": _median_ms(network, _tensor(windows.x[:1]), repeats),
        "latency_1k_ms": _median_ms(network, _tensor(windows.x[picks]), 5),
    }
