"""A plant's physics knowledge where its profile has one: today the `ai4i` profile (its failure rules,
noise levels and slow features in `mfd.profiles.ai4i_physics`). Other plants: none, and the stages that use
it (nearest rule of an alert, label noise of shifted holdouts, drift's slow features) do without."""

from __future__ import annotations

from types import ModuleType

import pandas as pd

from mfd.profiles import Profile, active


def plant_physics(profile: Profile | None = None) -> ModuleType | None:
    """The physics module of `profile` (default: the active one), or None."""
    if (profile or active()).generator != "ai4i":
        return None
    from mfd.profiles import ai4i_physics

    return ai4i_physics


def reference_readings(profile: Profile | None = None) -> pd.DataFrame | None:
    """The plant's reference data set as readings (canonical names), or None: AI4I 2020 for `ai4i`."""
    if (profile or active()).generator != "ai4i":
        return None
    from mfd.profiles.ai4i_reference import load_ai4i

    return load_ai4i()
