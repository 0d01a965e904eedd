"""Training, detection and `/predict` give the same machine-window features for the same readings (C-MAPSS
profile, in a process of its own: tests/detection/feature_routes.py), equal to the batch form over each
machine's whole history; detection's batches read their history from the store (without it the features
differ, so the comparison can fail)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).with_name("feature_routes.py")


def test_training_detection_and_predict_compute_the_same_window_features(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MFD_")}
    env |= {"MFD_PROFILE": "cmapss", "MFD_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "routes.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["columns"] == 24 * 3 * 4 + 1  # 24 sensors x windows 5/15/30 x mean/std/slope/change + age
    assert out["training"] == [210, 0.0]  # every reading, exactly
    assert out["detection"] == [210, 0.0]  # batches of 37, 50, 1, 60 and the rest, history from the store
    assert out["predict_list"] == [100, 0.0]  # m2's whole history and m1's life after its record, as lists
    assert out["predict_machine"] == [1, 0.0]  # m1's latest reading looked up by its id
    assert out["unknown_machine_rows"] == 0  # /predict_machine answers 404 for it
    rows, difference = out["detection_without_history"]
    assert rows > 0 and difference > 1.0, "the last batch alone should differ: the test could not fail"
