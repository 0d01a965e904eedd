"""The fleet generator: AI4I physics, determinism, peripheral clock, injected defects, and `mfd generate`
writing to SQLite + a local directory and to a real PostgreSQL + a real S3 server."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from mfd.cli.main import main
from mfd.features import feature_matrix
from mfd.generator import (
    GENERATED_COLUMNS,
    ROW_DEFECTS,
    defect_file,
    generate_peripheral,
    generate_readings,
    inject_defects,
    iter_readings,
    rechunk,
    to_csv_bytes,
)
from mfd.generator.defects import DEFECT_TEXT, DEFECT_TYPE
from mfd.generator.fleet import BLOCK_ROWS
from mfd.profiles.ai4i_reference import load_ai4i
from mfd.schema import LABEL_COLUMN, MACHINE_TYPES, REQUIRED_COLUMNS, SENSOR_COLUMNS
from mfd.services import S3Server
from mfd.storage import readings as store
from mfd.storage.objects import LocalObjects, S3Objects
from mfd.validation import SENSOR_RANGES

START = datetime(2026, 3, 1, tzinfo=UTC)
WEAR_STEP = {"L": 2, "M": 3, "H": 5}


@pytest.fixture(scope="module")
def fleet() -> pd.DataFrame:
    """200 machines x 500 readings."""
    return generate_readings(200, 100_000, seed=11, start=START)


def test_same_seed_gives_identical_rows_whatever_the_chunking() -> None:
    rows = BLOCK_ROWS + 5_003  # crosses a block boundary
    whole = generate_readings(3, rows, seed=5, start=START)
    assert list(whole.columns) == list(GENERATED_COLUMNS) and len(whole) == rows
    pd.testing.assert_frame_equal(whole, generate_readings(3, rows, seed=5, start=START))
    pd.testing.assert_frame_equal(whole, pd.concat(rechunk(iter_readings(3, rows, 5, START), 999)))
    assert not whole[list(SENSOR_COLUMNS)].equals(
        generate_readings(3, rows, seed=6, start=START)[list(SENSOR_COLUMNS)]
    )


def test_failure_rules_hold_exactly(fleet: pd.DataFrame) -> None:
    speed, torque, wear = fleet["rotational_speed_rpm"], fleet["torque_nm"], fleet["tool_wear_min"]
    hdf = (fleet["process_temperature_k"] - fleet["air_temperature_k"] < 8.6) & (speed < 1380)
    power = torque * speed * 2 * np.pi / 60
    pwf = (power < 3500) | (power > 9000)
    limit = fleet["machine_type"].map({"L": 11000, "M": 12000, "H": 13000})
    osf = wear * torque > limit
    assert (fleet["hdf"] == hdf).all() and hdf.sum() > 100
    assert (fleet["pwf"] == pwf).all() and pwf.sum() > 100
    assert (fleet["osf"] == osf).all() and osf.sum() > 100
    modes = fleet[["twf", "hdf", "pwf", "osf", "rnf"]].astype(bool)
    assert (fleet[LABEL_COLUMN] == modes.any(axis=1)).all()
    twf_wear = wear[fleet["twf"] == 1]
    assert len(twf_wear) > 50 and twf_wear.between(198, 253).all()
    assert 0.0005 < fleet["rnf"].mean() < 0.002


def test_distributions_match_ai4i(fleet: pd.DataFrame) -> None:
    per_machine = fleet.groupby("machine_id")["machine_type"].first().value_counts()
    assert per_machine.to_dict() == {"L": 120, "M": 60, "H": 20}
    speed, torque = fleet["rotational_speed_rpm"], fleet["torque_nm"]
    assert abs(speed.mean() - 1539) < 15 and abs(speed.std() - 179) < 15
    assert abs(np.corrcoef(speed, torque)[0, 1] + 0.875) < 0.03
    assert abs(torque.mean() - 40) < 1 and abs(torque.std() - 10) < 1 and torque.min() >= 0
    air = fleet["air_temperature_k"]
    diff = fleet["process_temperature_k"] - air
    assert abs(air.mean() - 300) < 0.6 and 1.5 < air.std() < 2.5
    assert abs(diff.mean() - 10) < 0.3 and 0.75 < diff.std() < 1.25
    assert 0.02 < fleet[LABEL_COLUMN].mean() < 0.06  # AI4I: 3.39 %


def test_each_machine_is_its_own_series(fleet: pd.DataFrame) -> None:
    assert fleet["machine_id"].str.fullmatch(r"M-\d{4}").all()
    for machine_id, rows in fleet.groupby("machine_id"):
        assert rows["timestamp"].is_monotonic_increasing and rows["timestamp"].is_unique, machine_id
        assert (rows["timestamp"].diff().dropna() == pd.Timedelta(seconds=60)).all()
        (machine_type,) = rows["machine_type"].unique()
        wear = rows["tool_wear_min"].to_numpy()
        step = np.diff(wear)
        resets = step < 0
        assert resets.any(), machine_id
        assert (step[~resets] == WEAR_STEP[machine_type]).all()
        assert (wear[1:][resets] == 0).all()
        assert ((wear[:-1][resets] >= 198) & (wear[:-1][resets] <= 253)).all()
    assert fleet.groupby("machine_id")["timestamp"].first().nunique() == 200  # own clocks


def test_model_trained_on_generated_rows_scores_on_real_ai4i() -> None:
    train = generate_readings(400, 20_000, seed=3, start=START)
    model = HistGradientBoostingClassifier(random_state=0).fit(feature_matrix(train), train[LABEL_COLUMN])
    real = load_ai4i()
    auc = roc_auc_score(real[LABEL_COLUMN].astype(int), model.predict_proba(feature_matrix(real))[:, 1])
    assert auc >= 0.95, auc


def test_peripheral_devices_report_on_their_own_clock(fleet: pd.DataFrame) -> None:
    readings = fleet[fleet["machine_id"].isin(["M-0001", "M-0002", "M-0003", "M-0004"])]
    devices = generate_peripheral(readings, seed=11)
    assert list(devices.columns) == [
        "machine_id",
        "timestamp",
        "power_meter_w",
        "vibration_mm_s",
        "ambient_temperature_k",
    ]
    pd.testing.assert_frame_equal(
        devices,
        pd.concat(generate_peripheral(part, seed=11) for part in rechunk(iter([readings]), 333))
        .sort_values(["timestamp", "machine_id"], kind="stable")
        .reset_index(drop=True),
    )
    for _, rows in devices.groupby("machine_id"):
        gaps = rows["timestamp"].diff().dropna().dt.total_seconds()
        assert len(rows) >= 240 and gaps.between(115, 125).all()
    assert not devices["timestamp"].isin(readings["timestamp"]).any()
    joined = pd.merge_asof(
        devices, readings.sort_values("timestamp"), on="timestamp", by="machine_id", direction="backward"
    )
    assert joined["torque_nm"].notna().all()
    power = joined["torque_nm"] * joined["rotational_speed_rpm"] * 2 * np.pi / 60
    assert np.corrcoef(joined["power_meter_w"], power)[0, 1] > 0.95
    assert np.corrcoef(joined["vibration_mm_s"], joined["tool_wear_min"])[0, 1] > 0.9
    assert 2.5 < (joined["air_temperature_k"] - joined["ambient_temperature_k"]).mean() < 3.5


def test_bad_rate_injects_every_kind_identifiably(fleet: pd.DataFrame) -> None:
    clean = fleet.head(3_000)
    bad, counts = inject_defects(clean, 0.25, seed=1)
    assert set(counts) == set(ROW_DEFECTS) and all(n > 50 for n in counts.values())
    assert len(bad) == len(clean) + counts["duplicate"]
    text = pd.read_csv(io.BytesIO(to_csv_bytes(bad)), dtype=str, keep_default_na=False)
    sensors = text[list(SENSOR_COLUMNS)]
    assert (sensors == "").any(axis=1).sum() == counts["nan"]
    assert (sensors == DEFECT_TEXT).any(axis=1).sum() == counts["text"]
    numbers = sensors.apply(pd.to_numeric, errors="coerce")
    out_of_range = pd.concat(
        [(numbers[c] < r.low) | (numbers[c] > r.high) for c, r in SENSOR_RANGES.items()], axis=1
    ).any(axis=1)
    assert out_of_range.sum() == counts["out_of_range"]
    assert (text["machine_type"] == DEFECT_TYPE).sum() == counts["bad_type"]
    assert text["machine_type"].isin([*MACHINE_TYPES, DEFECT_TYPE]).all()
    assert text.duplicated(["machine_id", "timestamp"]).sum() == counts["duplicate"]
    assert text.duplicated().sum() == counts["duplicate"]  # exact copies
    assert defect_file(clean, "empty", seed=1) == b""
    header = defect_file(clean, "missing_columns", seed=1).split(b"\n", 1)[0].decode().split(",")
    assert len(set(REQUIRED_COLUMNS) - set(header)) == 1


def _csv_rows(objects: LocalObjects | S3Objects, prefix: str) -> pd.DataFrame:
    keys = [o.key for o in objects.list(prefix) if "/peripheral/" not in o.key[len(prefix) - 1 :]]
    return pd.concat(pd.read_csv(io.BytesIO(objects.get(k))) for k in sorted(keys))


def test_cli_writes_sqlite_and_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    for name in ("MFD_DATABASE_URL", "MFD_S3_BUCKET"):
        monkeypatch.delenv(name, raising=False)
    argv = ["generate", "--machines", "5", "--rows", "2500", "--file-rows", "1000", "--seed", "3"]
    argv += ["--sink", "db", "--sink", "files", "--peripheral", "--start", "2026-03-01T00:00:00Z", "--quiet"]
    assert main(argv) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith("generated 2,500 readings from 5 machines") and "2,500 new rows" in line
    engine = store.create_engine(f"sqlite:///{tmp_path / 'home' / 'readings.db'}")
    stored = store.read_readings(engine)
    expected = generate_readings(5, 2500, seed=3, start=START)
    assert len(stored) == 2500 and (stored["torque_nm"].to_numpy() == expected["torque_nm"].to_numpy()).all()
    objects = LocalObjects(tmp_path / "home" / "objects")
    keys = [o.key for o in objects.list("incoming/")]
    assert len([k for k in keys if k.startswith("incoming/readings-")]) == 3
    assert len([k for k in keys if k.startswith("incoming/peripheral/peripheral-")]) == 3
    files = _csv_rows(objects, "incoming/")
    assert (
        len(files) == 2500
        and (files["rotational_speed_rpm"].to_numpy() == expected["rotational_speed_rpm"]).all()
    )
    assert main(argv) == 0  # the same run again: nothing stored twice, the same file keys
    assert "0 new rows (2,500 already stored)" in capsys.readouterr().out
    assert store.count_readings(engine) == 2500 and len(objects.list("incoming/")) == 6


def test_cli_writes_postgres_and_s3_with_defects_only_in_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    pg_url: str,
    s3: S3Server,
    bucket: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MFD_DATABASE_URL", pg_url)
    monkeypatch.setenv("MFD_S3_BUCKET", bucket)
    monkeypatch.setenv("MFD_S3_ENDPOINT_URL", s3.endpoint_url)
    monkeypatch.setenv("MFD_S3_ACCESS_KEY_ID", s3.access_key)
    monkeypatch.setenv("MFD_S3_SECRET_ACCESS_KEY", s3.secret_key)
    argv = ["generate", "--machines", "8", "--rows", "4000", "--file-rows", "500", "--bad-rate", "0.2"]
    argv += ["--sink", "db", "--sink", "files", "--peripheral", "--start", "2026-03-01", "--quiet"]
    assert main(argv) == 0
    line = capsys.readouterr().out.strip()
    counts = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}
    assert set(counts) == {*ROW_DEFECTS, "missing_columns", "empty"} and counts["text"] > 0
    engine = store.create_engine(pg_url)
    assert store.count_readings(engine) == 4000
    assert store.read_readings(engine)["machine_type"].isin(MACHINE_TYPES).all()
    objects = S3Objects(s3.client(), bucket)
    listed = objects.list("incoming/")
    data = [o for o in listed if o.key.startswith("incoming/readings-")]
    assert len(data) == 8 + counts["missing_columns"] + counts["empty"]
    assert sum(o.size == 0 for o in data) == counts["empty"]
    assert len([o for o in listed if o.key.startswith("incoming/peripheral/")]) == 8
    full = [o.key for o in data if o.size > 0]
    frames = [pd.read_csv(io.BytesIO(objects.get(k)), dtype=str, keep_default_na=False) for k in full]
    complete = [f for f in frames if set(REQUIRED_COLUMNS) <= set(f.columns)]
    assert len(complete) == 8
    rows = pd.concat(complete)
    assert len(rows) == 4000 + counts["duplicate"]
    assert (rows["machine_type"] == DEFECT_TYPE).sum() == counts["bad_type"]


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (["--rows", "0"], "--rows"),
        (["--machines", "0"], "--machines"),
        (["--bad-rate", "1.5", "--sink", "files"], "--bad-rate"),
        (["--bad-rate", "0.1"], "--sink files"),
        (["--sink", "tape"], "--sink"),
        (["--start", "soon"], "--start"),
        (["--rate", "-1"], "--rate"),
        (["--database-url", "not a url"], "--database-url"),
    ],
)
def test_cli_bad_arguments_are_one_line_exit_2(
    args: list[str],
    names: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    assert main(["generate", *args]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("mfd: error:") and names in err[0]


def test_cli_unreachable_services_name_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    monkeypatch.setenv("MFD_S3_BUCKET", "nowhere")
    monkeypatch.setenv("MFD_S3_ENDPOINT_URL", "http://127.0.0.1:1")
    assert main(["generate", "--rows", "10", "--database-url", "postgresql://mfd@127.0.0.1:1/none"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mfd: error: cannot reach readings database") and "check --database-url" in line
    for name in (
        "MFD_S3_ACCESS_KEY_ID",
        "MFD_S3_SECRET_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    assert main(["generate", "--rows", "10", "--sink", "files"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert "Unable to locate credentials" in line and "MFD_S3_ACCESS_KEY_ID" in line
    monkeypatch.setenv("MFD_S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("MFD_S3_SECRET_ACCESS_KEY", "secret")
    assert main(["generate", "--rows", "10", "--sink", "files"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("mfd: error: cannot reach S3 endpoint") and "MFD_S3_ENDPOINT_URL" in line


def test_cli_rate_and_duration_set_the_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MFD_DATABASE_URL", raising=False)
    base = ["generate", "--quiet", "--seed", "1"]
    assert main([*base, "--machines", "2", "--rows", "300", "--rate", "150", "--start", "2026-03-01"]) == 0
    assert main([*base, "--machines", "3", "--duration", "600", "--start", "2026-04-01"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("generated 300 readings") and out[1].startswith("generated 30 readings")
    stored = store.read_readings(store.create_engine(f"sqlite:///{tmp_path / 'home' / 'readings.db'}"))
    paced = stored[stored["timestamp"] < pd.Timestamp("2026-04-01", tz="UTC")]
    gaps = paced.groupby("machine_id")["timestamp"].diff().dropna().dt.total_seconds()
    # --interval defaults to machines / rate, so the timestamps follow the wall clock
    assert len(paced) == 300 and np.allclose(gaps, 2 / 150, atol=1e-6)
    assert (stored["timestamp"] >= pd.Timestamp("2026-04-01", tz="UTC")).sum() == 30


def test_ctrl_c_stops_between_batches_and_keeps_sinks_equal(tmp_path: Path) -> None:
    env = {**os.environ, "MFD_HOME": str(tmp_path / "home")}
    for name in ("MFD_DATABASE_URL", "MFD_S3_BUCKET"):
        env.pop(name, None)
    argv = [Path(sys.executable).with_name("mfd"), "generate", "--machines", "3", "--rate", "50"]
    proc = subprocess.Popen(
        [*argv, "--sink", "db", "--sink", "files", "--quiet"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    db = tmp_path / "home" / "readings.db"
    objects = LocalObjects(tmp_path / "home" / "objects")
    stored = 0
    try:
        deadline = time.monotonic() + 120  # the first batch, however slow a loaded CI machine starts Python
        while not stored and time.monotonic() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    stored = store.count_readings(store.create_engine(f"sqlite:///{db}"))
                except sa.exc.OperationalError:  # the file is there, its table not yet
                    stored = 0
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert stored > 0, f"no batch stored before the interrupt; generator printed: {out!r}"
    assert proc.returncode == 0 and "(interrupted)" in out
    generated = int(re.search(r"generated ([\d,]+) readings", out).group(1).replace(",", ""))
    assert generated > 0 and store.count_readings(store.create_engine(f"sqlite:///{db}")) == generated
    assert len(_csv_rows(objects, "incoming/")) == generated
