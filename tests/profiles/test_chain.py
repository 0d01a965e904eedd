"""The whole chain (ingest -> training set -> candidate -> champion -> detection -> `/predict`) for three
plant profiles with the same test body: the shipped `ai4i` (its physics generator), the shipped `cmapss`
(NASA's FD001 train split through `mfd import cmapss`) and a pump station this test writes (the generic
fleet generator). A profile is per process, so each chain runs in its own (tests/profiles/chain.py)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from mfd.profiles import load

REPO = Path(__file__).resolve().parents[2]
CHAIN = Path(__file__).with_name("chain.py")

PUMP = REPO / "tests" / "data" / "profiles" / "pump-station.yaml"


def _env(home: Path, profile: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MFD_", "DAGSTER_"))}
    return {**clean, "MFD_HOME": str(home), "MFD_PROFILE": profile, "DAGSTER_HOME": str(home / "dagster")}


def _run(args: list[str], env: dict[str, str], timeout: float = 540) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )


def _contents(database: Path) -> dict[str, object]:
    """Every table's row count, and the profile record (SQLite checkpoints its WAL on open: compare rows)."""
    with sqlite3.connect(database) as conn:
        tables = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        return {**counts, "plant_profile": conn.execute("SELECT name, digest FROM plant_profile").fetchall()}


@pytest.mark.parametrize(
    ("profile", "source"), [("ai4i", "generate"), ("cmapss", "cmapss"), ("pump", "generate")]
)
def test_the_whole_chain_runs_on_the_profile(profile: str, source: str, tmp_path: Path) -> None:
    selected = str(PUMP) if profile == "pump" else profile
    plant = load(selected)
    home = tmp_path / "home"
    (home / "dagster").mkdir(parents=True)
    result = _run([sys.executable, str(CHAIN), source], _env(home, selected))
    lines = [line for line in result.stdout.splitlines() if line.startswith("CHAIN ")]
    assert result.returncode == 0 and lines, result.stdout[-3000:] + result.stderr[-5000:]
    chain = json.loads(lines[-1].removeprefix("CHAIN "))

    assert chain["profile"] == plant.name
    assert chain["stored"] > 1000 and chain["scored"] == chain["stored"]
    low, high = chain["probability_range"]
    assert 0.0 <= low < high <= 1.0
    training = chain["metadata"]["training_set"]
    assert 0 < training["failures"] < training["rows"]
    candidate = chain["metadata"]["candidate_model"]
    assert candidate["holdout_roc_auc"] >= 0.8, candidate["holdout_roc_auc"]
    assert chain["metadata"]["champion_model"]["promoted"] is True
    # /predict: the request in the profile's own column names, one answer per reading
    served = chain["predict"]
    expected = {plant.source_name("machine_type")} if plant.segment_column else set()
    assert {key for r in served["request"] for key in r} == expected | set(plant.sensor_columns)
    assert len(served["answers"]) == len(served["request"]) == 3
    assert all(0.0 <= a["probability"] <= 1.0 and a["model_version"] == "1" for a in served["answers"])

    # The same store under another profile: refused with one line naming both, nothing written.
    other = "cmapss" if plant.name == "ai4i" else "ai4i"
    before = _contents(home / "readings.db")
    refused = _run([str(Path(sys.executable).with_name("mfd")), "events"], _env(home, other), timeout=120)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert plant.name in refused.stderr and other in refused.stderr
    assert _contents(home / "readings.db") == before

    # The champion under another profile (a fresh database, the same registry): scoring refused, one line.
    code = (
        "from mfd_assets.definitions import settings; from mfd.serving.champion import Champion; "
        "Champion(settings.tracking_uri, settings.model_name, settings.home).start()"
    )
    fresh = {**_env(home, other), "MFD_DATABASE_URL": f"sqlite:///{tmp_path / 'other.db'}"}
    loaded = _run([sys.executable, "-c", code], fresh, timeout=180)
    assert loaded.returncode != 0
    assert f"was trained on plant profile {plant.name}" in loaded.stderr.splitlines()[-1], loaded.stderr[
        -2000:
    ]
