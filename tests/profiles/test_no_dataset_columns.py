"""No module outside the plant profiles (and the AI4I physics generator) names an AI4I column: every
stage reads its columns from the active profile."""

from __future__ import annotations

import re
from pathlib import Path

from mfd.profiles import load

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("mfd", "mfd_assets", "mfd_resources", "mfd_sensors", "bento", "bench")
# The profiles themselves, and the AI4I generator (its physics are the `ai4i` profile's simulation).
ALLOWED = ("mfd/profiles/", "mfd/generator/fleet.py", "mfd/generator/peripheral.py")


def ai4i_columns() -> list[str]:
    profile = load("ai4i")
    return [*profile.sensor_columns, *profile.derived_columns, *(s.name for s in profile.peripheral)]


def test_no_module_outside_the_profiles_names_an_ai4i_column() -> None:
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, ai4i_columns())) + r")\b")
    offenders = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith(ALLOWED):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if found := pattern.search(line):
                    offenders.append(f"{relative}:{number}: {found.group(0)}")
    assert not offenders, "AI4I columns named outside mfd/profiles:\n" + "\n".join(offenders)


def test_the_grep_would_catch_a_column() -> None:
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, ai4i_columns())) + r")\b")
    assert pattern.search('frame["torque_nm"]') and pattern.search("x.vibration_mm_s")
    assert not pattern.search("noise_<sensor>")
