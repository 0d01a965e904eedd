"""A small torch multilayer perceptron as a scikit-learn classifier: fits in a Pipeline, pickles, CPU only."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from torch import nn

from mfd.modeling.budget import NO_DEADLINE, Deadline
from mfd.torch_threads import torch_threads


class TorchMLPClassifier(ClassifierMixin, BaseEstimator):
    """Binary classifier: standardized inputs -> `layers` x (Linear(width) + ReLU) -> sigmoid.

    The positive class is weighted by the negative/positive ratio (capped at `max_pos_weight`), so rare
    failures still move the loss; probabilities come from the sigmoid of the last layer.
    """

    def __init__(
        self,
        width: int = 64,
        layers: int = 2,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-5,
        epochs: int = 40,
        batch_size: int = 512,
        max_pos_weight: float = 10.0,
        random_state: int = 0,
    ) -> None:
        self.width = width
        self.layers = layers
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.max_pos_weight = max_pos_weight
        self.random_state = random_state

    def _network(self, n_features: int) -> nn.Sequential:
        blocks: list[nn.Module] = []
        width_in = n_features
        for _ in range(self.layers):
            blocks += [nn.Linear(width_in, self.width), nn.ReLU()]
            width_in = self.width
        blocks.append(nn.Linear(width_in, 1))
        return nn.Sequential(*blocks)

    def fit(self, X: object, y: object) -> TorchMLPClassifier:  # noqa: N803 - sklearn API
        return self.fit_within(X, y, NO_DEADLINE)

    def fit_within(self, X: object, y: object, deadline: Deadline) -> TorchMLPClassifier:  # noqa: N803
        """`fit`, raising OutOfTime at the first epoch's end past `deadline`."""
        x = np.asarray(X, dtype="float32")
        target = np.asarray(y).astype("float32")
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = x.shape[1]
        self.mean_ = x.mean(axis=0)
        self.scale_ = x.std(axis=0) + 1e-6
        generator = torch.Generator().manual_seed(self.random_state)
        with torch_threads(1), torch.random.fork_rng():
            torch.manual_seed(self.random_state)
            self.network_ = self._train(x, target, generator, deadline)
        return self

    def _train(
        self, x: np.ndarray, target: np.ndarray, generator: torch.Generator, deadline: Deadline
    ) -> nn.Sequential:
        net = self._network(x.shape[1])
        positives = max(float(target.sum()), 1.0)
        pos_weight = min((len(target) - positives) / positives, self.max_pos_weight)
        loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight))
        optimizer = torch.optim.AdamW(net.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay)
        inputs = torch.from_numpy((x - self.mean_) / self.scale_)
        labels = torch.from_numpy(target)
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(inputs), generator=generator)
            for start in range(0, len(inputs), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss_fn(net(inputs[batch]).squeeze(1), labels[batch]).backward()
                optimizer.step()
            deadline.check()
        net.eval()
        return net

    def predict_proba(self, X: object) -> np.ndarray:  # noqa: N803 - sklearn API
        x = (np.asarray(X, dtype="float32") - self.mean_) / self.scale_
        with torch_threads(1), torch.inference_mode():
            p = torch.sigmoid(self.network_(torch.from_numpy(x)).squeeze(1)).numpy().astype("float64")
        return np.column_stack([1.0 - p, p])

    def predict(self, X: object) -> np.ndarray:  # noqa: N803 - sklearn API
        return (self.predict_proba(X)[:, 1] >= 0.5).astype("int64")
