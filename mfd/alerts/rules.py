"""The plant's failure rules, where its profile has physics (`mfd.profiles.physics`; AI4I's heat
dissipation, power and overstrain): the margin of each reading to each rule, the rules that fire and the
nearest rule of an alert. A plant without physics rules has no margins, no hits and no nearest rule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from mfd.profiles.physics import plant_physics


def rule_margins(readings: pd.DataFrame) -> pd.DataFrame:
    """Relative margin to each rule per reading (rows as `readings`, one column per rule; none without)."""
    physics = plant_physics()
    return physics.rule_margins(readings) if physics else pd.DataFrame(index=readings.index)


def rule_hits(readings: pd.DataFrame) -> np.ndarray:
    """True where any rule fires (margin <= 0); all False for a plant without rules."""
    physics = plant_physics()
    return physics.rule_hits(readings) if physics else np.zeros(len(readings), dtype=bool)


def nearest_rules(readings: pd.DataFrame) -> list[dict[str, object]] | list[None]:
    """Per reading: the rule with the smallest margin, whether it fires, the margin and the values (None
    per reading for a plant without rules)."""
    physics = plant_physics()
    return physics.nearest_rules(readings) if physics else [None] * len(readings)
