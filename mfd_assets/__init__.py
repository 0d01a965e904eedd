"""Dagster assets, one module per group of the asset graph (left to right)."""

from __future__ import annotations

from types import ModuleType

from mfd_assets import augmentation, detection, ingestion, preparation, quality, shadow
from mfd_assets import serving as serving_assets
from mfd_assets import training as training_assets

ASSET_MODULES: list[ModuleType] = [
    ingestion,
    preparation,
    augmentation,
    quality,
    detection,
    shadow,
    serving_assets,
    training_assets,
]
