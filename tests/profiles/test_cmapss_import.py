"""`mfd import cmapss` turns NASA's C-MAPSS text files into readings CSVs of the cmapss profile: every cell
as written in the source, engines named `<subset>-<split>-<unit:03d>`, cycle c at 2020-01-01T00:00Z + (c-1) h,
one failure record per training engine at its last cycle; bad input exits 2 with one line naming file and
line."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import sqlalchemy as sa

from mfd.cli.main import main
from mfd.profiles import load
from mfd.profiles.cmapss_import import DEFAULT_DIR, CmapssError, convert

START = datetime(2020, 1, 1, tzinfo=UTC)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("MFD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MFD_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def _source(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _rows(objects: Path, pattern: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows of every file matching `pattern` under incoming/, in key order."""
    headers, rows = set(), []
    for path in sorted((objects / "incoming").glob(pattern)):
        records = list(csv.reader(io.StringIO(path.read_text())))
        headers.add(tuple(records[0]))
        rows += records[1:]
    assert len(headers) == 1
    return list(headers.pop()), rows


def _stamp(cycle: int) -> datetime:
    return START + timedelta(hours=cycle - 1)


def test_every_cell_of_fd001_train_is_stored_as_written(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["import", "cmapss", "--subset", "FD001"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "imported C-MAPSS FD001 train: 100 engines, 20,631 readings in 3 CSV files under incoming/, 100 failure "
        f"records in 1 file under incoming/maintenance/ -> local directory {home / 'objects'}"
    )
    profile = load("cmapss")
    header, rows = _rows(home / "objects", "cmapss-FD001-train-*.csv")
    assert header == ["engine", "timestamp", "subset", *profile.sensor_columns]
    source = _source(DEFAULT_DIR / "train_FD001.txt")
    assert len(rows) == len(source) == 20_631
    for row, cells in zip(rows, source, strict=True):
        unit, cycle = int(cells[0]), int(cells[1])
        assert row[0] == f"FD001-train-{unit:03d}"
        assert datetime.fromisoformat(row[1]) == _stamp(cycle)
        assert row[2] == "FD001"
        assert row[3:] == cells[2:]  # the text itself, not a float's rendering of it


def test_the_csv_parses_as_ingestion_fast_path_reads_it(home: Path) -> None:
    """Arrow reads every timestamp as UTC and every sensor as a number, unquoted (mfd.ingestion.parsing)."""
    assert main(["import", "cmapss", "--split", "test"]) == 0
    path = home / "objects" / "incoming" / "cmapss-FD001-test-001.csv"
    sensors = load("cmapss").sensor_columns
    types = {"timestamp": pa.timestamp("us", tz="UTC"), **dict.fromkeys(sensors, pa.float64())}
    table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(column_types=types))
    first = table.slice(0, 1).to_pylist()[0]
    assert first["engine"] == "FD001-test-001" and first["timestamp"] == START
    assert first["t2_total_temperature_fan_inlet"] == 518.67


def test_each_training_engine_fails_at_its_last_cycle(home: Path) -> None:
    assert main(["import", "cmapss"]) == 0
    text = (home / "objects" / "incoming" / "maintenance" / "cmapss-FD001-train.csv").read_text()
    records = list(csv.DictReader(io.StringIO(text)))
    last: dict[int, int] = {}
    for cells in _source(DEFAULT_DIR / "train_FD001.txt"):
        last[int(cells[0])] = int(cells[1])
    assert [r["machine_id"] for r in records] == [f"FD001-train-{u:03d}" for u in sorted(last)]
    assert all(r["outcome"] == "failure" for r in records)
    assert len({r["work_order_id"] for r in records}) == 100
    for record in records:
        unit = int(record["machine_id"][-3:])
        assert datetime.fromisoformat(record["timestamp"]) == _stamp(last[unit])
    assert records[0]["timestamp"] == "2020-01-08T23:00:00Z"  # unit 1 runs 192 cycles


def test_the_test_split_has_no_records_and_names_the_rul_file(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["import", "cmapss", str(DEFAULT_DIR), "--subset", "FD001", "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "100 engines, 13,096 readings in 2 CSV files" in out and "failure records" not in out
    assert "RUL_FD001.txt: true remaining cycles per test engine, not imported" in out
    assert not (home / "objects" / "incoming" / "maintenance").exists()
    _, rows = _rows(home / "objects", "cmapss-FD001-test-*.csv")
    engine_7 = [r for r in rows if r[0] == "FD001-test-007"]
    source_7 = [c for c in _source(DEFAULT_DIR / "test_FD001.txt") if c[0] == "7"]
    assert [r[3:] for r in engine_7] == [c[2:] for c in source_7] and len(engine_7) > 0


def _nasa_line(unit: int, cycle: int, offset: float) -> str:
    values = [f"{offset + i * 0.25:.4f}" for i in range(24)]
    return " ".join([str(unit), str(cycle), *values]) + "  "  # NASA's trailing spaces


@pytest.fixture
def fd003(tmp_path: Path) -> Path:
    """A small file in NASA's format for a subset not vendored: 3 engines of 4, 2 and 5 cycles."""
    directory = tmp_path / "nasa"
    directory.mkdir()
    lines = [_nasa_line(u, c, 10 * u + c) for u, n in ((1, 4), (2, 2), (3, 5)) for c in range(1, n + 1)]
    (directory / "train_FD003.txt").write_text("\n".join(lines) + "\n")
    (directory / "test_FD003.txt").write_text("\n".join(lines[:6]) + "\n")
    (directory / "RUL_FD003.txt").write_text("12\n40\n")
    return directory


def test_any_subset_in_the_same_format_converts_whole_engines_per_file(fd003: Path) -> None:
    converted = convert(fd003, "FD003", "train", load("cmapss"), file_rows=6)
    assert (converted.engines, converted.rows) == (3, 11)
    keys = [key for key, _ in converted.readings]
    assert keys == ["cmapss-FD003-train-001.csv", "cmapss-FD003-train-002.csv"]
    parts = [list(csv.reader(io.StringIO(data.decode())))[1:] for _, data in converted.readings]
    assert [sorted({r[0] for r in part}) for part in parts] == [
        ["FD003-train-001", "FD003-train-002"],
        ["FD003-train-003"],
    ]
    source = _source(fd003 / "train_FD003.txt")
    assert [r[3:] for part in parts for r in part] == [c[2:] for c in source]
    assert parts[1][-1][:3] == ["FD003-train-003", "2020-01-01 04:00:00.000Z", "FD003"]
    (key, data), = converted.maintenance  # fmt: skip
    assert key == "maintenance/cmapss-FD003-train.csv"
    assert data.decode().splitlines()[1:] == [
        "FD003-train-001,2020-01-01T03:00:00Z,failure,WO-cmapss-FD003-train-001",
        "FD003-train-002,2020-01-01T01:00:00Z,failure,WO-cmapss-FD003-train-002",
        "FD003-train-003,2020-01-01T04:00:00Z,failure,WO-cmapss-FD003-train-003",
    ]
    test = convert(fd003, "FD003", "test", load("cmapss"))
    assert (test.engines, test.maintenance, test.rul) == (2, [], fd003 / "RUL_FD003.txt")


def _fails(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    return err.removeprefix("mfd: error: ").rstrip("\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (_nasa_line(2, 3, 1.0).rsplit(" ", 3)[0], "train_FD002.txt line 2: 25 columns, expected 26"),
        (
            _nasa_line(2, 3, 1.0).replace("1.2500", "n/a"),
            "train_FD002.txt line 2: column 4 'n/a' is not a number",
        ),
        (
            _nasa_line(2, 3, 1.0).replace("1.2500", "nan"),
            "train_FD002.txt line 2: column 4 'nan' is not a number",
        ),
        (
            _nasa_line(2, 3, 1.0).replace("2 3", "2 x", 1),
            "train_FD002.txt line 2: cycle 'x' is not a positive",
        ),
        (
            _nasa_line(2, 3, 1.0).replace("2 3", "0 3", 1),
            "train_FD002.txt line 2: unit '0' is not a positive",
        ),
        (_nasa_line(1, 1, 1.0), "train_FD002.txt line 2: unit 1 cycle 1 does not follow cycle 1"),
    ],
)
def test_a_malformed_line_exits_2_naming_file_and_line(
    line: str, expected: str, tmp_path: Path, home: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "train_FD002.txt").write_text(_nasa_line(1, 1, 0.0) + "\n" + line + "\n")
    error = _fails(["import", "cmapss", str(tmp_path), "--subset", "FD002"], capsys)
    assert error.startswith(f"{tmp_path}/{expected}"), error
    assert not (home / "objects" / "incoming").exists()  # nothing written


def test_missing_files_and_bad_options_exit_2_with_one_line(
    tmp_path: Path, home: Path, fd003: Path, capsys: pytest.CaptureFixture
) -> None:
    error = _fails(["import", "cmapss", str(tmp_path), "--subset", "FD004"], capsys)
    assert error == f"{tmp_path}/train_FD004.txt: no such file (NASA's train_FD004.txt)"
    assert _fails(["import", "cmapss", "--subset", "FD009"], capsys).startswith(
        "--subset FD009: profile cmapss allows subset FD001, FD002, FD003, FD004"
    )
    assert _fails(["import", "cmapss", "--subset", "fd1"], capsys).startswith(
        "--subset 'fd1': expected FD001"
    )
    (tmp_path / "train_FD001.txt").write_text("\n  \n")
    assert (
        _fails(["import", "cmapss", str(tmp_path)], capsys)
        == f"{tmp_path}/train_FD001.txt: no readings (an empty file)"
    )
    (fd003 / "RUL_FD003.txt").write_text("12\n")
    error = _fails(["import", "cmapss", str(fd003), "--subset", "FD003", "--split", "test"], capsys)
    assert error == f"{fd003}/RUL_FD003.txt: 1 values, expected one per test engine (2)"
    with pytest.raises(CmapssError, match="--split 'dev': expected train or test"):
        convert(fd003, "FD003", "dev", load("cmapss"))


def test_the_cmapss_profile_ingests_every_imported_reading(home: Path, capsys: pytest.CaptureFixture) -> None:
    """The files pass the cmapss profile's own checks: `mfd ingest` in a process run with MFD_PROFILE=cmapss
    loads every row of one, none refused."""
    assert main(["import", "cmapss", "--split", "test"]) == 0
    assert "ingest these with MFD_PROFILE=cmapss" in capsys.readouterr().out
    key = "incoming/cmapss-FD001-test-002.csv"
    lines = (home / "objects" / key).read_text().splitlines()
    rows, name = len(lines) - 1, lines[1].split(",")[0]  # the file's first engine
    env = {**os.environ, "MFD_PROFILE": "cmapss"}
    cli = Path(sys.executable).parent / "mfd"
    done = subprocess.run([str(cli), "ingest", key], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"read {rows:,} = loaded {rows:,} + duplicate 0 + conflicting 0 + rejected 0" in done.stdout
    engine = sa.create_engine(f"sqlite:///{home / 'readings.db'}")
    with engine.connect() as conn:
        stored = conn.execute(
            sa.text(
                "SELECT machine_type, setting_1, w32_lpt_coolant_bleed FROM readings WHERE machine_id = :m "
                "ORDER BY timestamp"
            ),
            {"m": name},
        ).all()
    source = [c for c in _source(DEFAULT_DIR / "test_FD001.txt") if int(c[0]) == int(name[-3:])]
    assert [tuple(r) for r in stored] == [("FD001", float(c[2]), float(c[25])) for c in source]
