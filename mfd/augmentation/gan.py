"""A small conditional GAN (torch, CPU) that learns the failures and generates synthetic ones.

The generator produces the five sensors conditioned on machine type and, when the training rows carry
them, the failure modes (twf..rnf: never model inputs, but they tell the GAN which kind of failure to
draw, so heat-dissipation, power and overstrain failures keep their own physics). Conditions are drawn
from the real failures' joint (type, modes) combinations. Physics features are derived from the generated
sensors afterwards (never generated), and values are clipped to the range the real failures span, itself
inside the physical ranges of mfd.schema. `ks_table` says how close each feature is to the real failures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.stats import ks_2samp
from torch import nn

from mfd.augmentation.frames import clip_sensors, combine, require_inputs, rows_to_add
from mfd.errors import MfdError
from mfd.features import PHYSICS_COLUMNS, add_physics
from mfd.schema import FAILURE_MODE_COLUMNS, LABEL_COLUMN, MACHINE_TYPES, SENSOR_COLUMNS
from mfd.torch_threads import torch_threads


@dataclass(frozen=True)
class GanConfig:
    steps: int = 400
    batch_size: int = 64
    noise_dim: int = 8
    hidden: int = 64
    learning_rate: float = 1e-3
    seed: int = 0
    threads: int = 1


@dataclass
class FailureGan:
    """A trained generator plus what it needs to turn its output back into sensor readings."""

    generator: nn.Module
    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    high: np.ndarray
    conditions: np.ndarray
    noise_dim: int

    def generate(self, n: int, seed: int = 0) -> pd.DataFrame:
        """`n` synthetic failures: machine_type, the sensor columns and machine_failure = 1."""
        rng = np.random.default_rng(seed)
        drawn = self.conditions[rng.integers(0, len(self.conditions), size=n)]
        machine_types = np.array(MACHINE_TYPES, dtype=object)[drawn[:, : len(MACHINE_TYPES)].argmax(axis=1)]
        cond = torch.tensor(drawn, dtype=torch.float32)
        noise = torch.tensor(rng.standard_normal((n, self.noise_dim)), dtype=torch.float32)
        with torch.no_grad():
            scaled = self.generator(torch.cat([noise, cond], dim=1)).numpy().astype("float64")
        values = np.clip(scaled * self.std + self.mean, self.low, self.high)
        out = pd.DataFrame(values, columns=list(SENSOR_COLUMNS))
        out.insert(0, "machine_type", pd.array(machine_types, dtype="string"))
        out[LABEL_COLUMN] = pd.array(np.ones(n, dtype="int8"), dtype="Int8")
        return clip_sensors(out)


def conditions(failures: pd.DataFrame) -> np.ndarray:
    """Per failure: one-hot machine type, then a 0/1 flag per failure mode column present."""
    types = failures["machine_type"].to_numpy(dtype=object)
    one_hot = [(types == t).astype("float32") for t in MACHINE_TYPES]
    modes = [
        failures[c].fillna(0).astype("float32").to_numpy() for c in FAILURE_MODE_COLUMNS if c in failures
    ]
    return np.stack([*one_hot, *modes], axis=1)


def _mlp(inputs: int, hidden: int, outputs: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(inputs, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, hidden),
        nn.LeakyReLU(0.2),
        nn.Linear(hidden, outputs),
    )


def train_gan(failures: pd.DataFrame, config: GanConfig = GanConfig()) -> FailureGan:
    """Train the conditional GAN on `failures` (rows with machine_type and the sensor columns)."""
    if len(failures) < 2:
        raise MfdError(f"the GAN needs at least 2 real failures to learn from, got {len(failures)}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    x = failures[list(SENSOR_COLUMNS)].to_numpy("float64")
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-6
    real = torch.tensor((x - mean) / std, dtype=torch.float32)
    cond_rows = conditions(failures)
    cond = torch.tensor(cond_rows, dtype=torch.float32)
    n_features, n_cond = real.shape[1], cond.shape[1]
    with torch_threads(config.threads):
        generator = _mlp(config.noise_dim + n_cond, config.hidden, n_features)
        discriminator = _mlp(n_features + n_cond, config.hidden, 1)
        g_opt = torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
        d_opt = torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate, betas=(0.5, 0.999))
        loss = nn.BCEWithLogitsLoss()
        batch = min(config.batch_size, len(real))
        ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
        for _ in range(config.steps):
            idx = torch.tensor(rng.choice(len(real), batch, replace=False))
            c = cond[idx]
            fake = generator(torch.cat([torch.randn(batch, config.noise_dim), c], dim=1))
            d_loss = loss(discriminator(torch.cat([real[idx], c], dim=1)), ones) + loss(
                discriminator(torch.cat([fake.detach(), c], dim=1)), zeros
            )
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            g_loss = loss(discriminator(torch.cat([fake, c], dim=1)), ones)
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
    generator.eval()
    return FailureGan(
        generator=generator,
        mean=mean,
        std=std,
        low=x.min(axis=0),
        high=x.max(axis=0),
        conditions=cond_rows,
        noise_dim=config.noise_dim,
    )


def ks_table(real: pd.DataFrame, synthetic: pd.DataFrame) -> pd.DataFrame:
    """Two-sample KS statistic and p-value per sensor and physics feature (0 = identical distributions)."""
    real, synthetic = add_physics(real), add_physics(synthetic)
    rows = {}
    for col in (*SENSOR_COLUMNS, *PHYSICS_COLUMNS):
        result = ks_2samp(real[col], synthetic[col])
        rows[col] = {"ks_statistic": result.statistic, "p_value": result.pvalue}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("feature")


def gan_augment(
    train: pd.DataFrame, target_ratio: float = 0.25, config: GanConfig = GanConfig()
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`train` plus GAN failures up to `target_ratio` failures per non-failure, and the KS table."""
    require_inputs(train, "the GAN's training rows")
    failures = train[train[LABEL_COLUMN].astype("int64") == 1]
    n = rows_to_add(train[LABEL_COLUMN], target_ratio)
    gan = train_gan(failures, config)
    synthetic = gan.generate(max(n, 1), seed=config.seed)
    ks = ks_table(failures, synthetic)
    return combine(train, synthetic.iloc[:n]), ks
