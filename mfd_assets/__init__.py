"""Dagster assets, one module per group of the asset graph (left to right)."""

from __future__ import annotations

from types import ModuleType

from mfd_assets import augmentation, detection, preparation, quality

ASSET_MODULES: list[ModuleType] = [preparation, augmentation, quality, detection]
