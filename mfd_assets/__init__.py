"""Dagster assets, one module per group of the asset graph (left to right)."""

from __future__ import annotations

from types import ModuleType

ASSET_MODULES: list[ModuleType] = []
