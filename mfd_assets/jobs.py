"""Jobs over the asset graph."""

from __future__ import annotations

import dagster as dg

JOBS: list[dg.UnresolvedAssetJobDefinition] = []
