"""Dagster assets, one module per group of the asset graph (left to right)."""

from __future__ import annotations

import warnings
from types import ModuleType

import dagster as dg

# mfd uses these beta/preview APIs on purpose (observable source, partitioned checks): no warning at each
# import, in every process. Set before the asset modules below are imported.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
warnings.filterwarnings("ignore", category=dg.PreviewWarning)

from mfd_assets import alarms as alarm_assets  # noqa: E402
from mfd_assets import augmentation, detection, ingestion, preparation, quality  # noqa: E402
from mfd_assets import serving as serving_assets  # noqa: E402
from mfd_assets import streaming as streaming_assets  # noqa: E402
from mfd_assets import training as training_assets  # noqa: E402

ASSET_MODULES: list[ModuleType] = [
    ingestion,
    streaming_assets,
    preparation,
    augmentation,
    quality,
    detection,
    alarm_assets,
    serving_assets,
    training_assets,
]
