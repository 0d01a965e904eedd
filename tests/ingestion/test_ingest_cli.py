"""`mfd ingest` tries every file, reports each on its own line, and says with its exit status whether a
file was refused (fix the file) or could not be loaded (fix the service and run again)."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from mfd.cli.ingest import EXIT_FAILED, EXIT_REJECTED
from mfd.cli.main import main
from mfd.generator import generate_readings, to_csv_bytes
from mfd.storage.objects import LocalObjects


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [n for n in os.environ if n.startswith("MFD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("MFD_HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(LocalObjects, "settle", timedelta(0))  # files put by the test are whole at once
    return tmp_path


def _loaded(home: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{home / 'readings.db'}")
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT count(*) FROM readings")).scalar_one()


def test_a_failing_file_does_not_stop_the_rest(home: Path, capsys: pytest.CaptureFixture) -> None:
    objects = LocalObjects(home / "objects")
    objects.put("incoming/good.csv", to_csv_bytes(generate_readings(4, 200, seed=3)))
    objects.put("incoming/empty.csv", b"")
    status = main(["ingest", "incoming/gone.csv", "incoming/good.csv", "incoming/empty.csv"])
    out = capsys.readouterr().out
    assert status == EXIT_FAILED
    lines = out.splitlines()
    assert lines[0].startswith(
        "incoming/gone.csv: failed: incoming/gone.csv was deleted before it could be read"
    )
    assert (
        "incoming/good.csv: processed, read 200 = loaded 200 + duplicate 0 + conflicting 0 + rejected 0"
        in out
    )
    assert "incoming/empty.csv: rejected" in out and "rejected whole: empty_file" in out
    assert lines[-1] == (
        "3 files: 1 loaded, 1 rejected, 1 failed; still in incoming/, run again once fixed: incoming/gone.csv"
    )
    assert _loaded(home) == 200


def test_only_a_refused_file_exits_with_the_rejected_status(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    objects = LocalObjects(home / "objects")
    objects.put("incoming/good.csv", to_csv_bytes(generate_readings(2, 50, seed=1)))
    objects.put("incoming/header-only.csv", b"machine_id,timestamp\n")
    assert main(["ingest"]) == EXIT_REJECTED
    assert capsys.readouterr().out.splitlines()[-1] == "2 files: 1 loaded, 1 rejected, 0 failed"
    assert main(["ingest"]) == 0
    assert "nothing under incoming/" in capsys.readouterr().out


def test_a_corrected_file_prints_its_conflicts_and_the_policy_can_replace(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    objects = LocalObjects(home / "objects")
    frame = generate_readings(2, 100, seed=4)
    objects.put("incoming/a.csv", to_csv_bytes(frame))
    assert main(["ingest"]) == 0
    fixed = frame.assign(torque_nm=frame["torque_nm"].where(frame.index >= 5, frame["torque_nm"] + 1))
    objects.put("incoming/a.csv", to_csv_bytes(fixed))
    assert main(["ingest"]) == 0
    out = capsys.readouterr().out
    assert "incoming/a.csv: processed, read 100 = loaded 0 + duplicate 95 + conflicting 5 + rejected 0" in out
    [side] = [o.key for o in objects.list("rejected/") if o.key.endswith(".conflicts.csv")]
    assert f"conflicting rows, stored and incoming values side by side: {side}" in out
    assert len(objects.list("processed/")) == 2  # both versions archived
    objects.put("incoming/a.csv", to_csv_bytes(fixed))
    assert main(["ingest", "--conflict-policy", "replace"]) == 0
    out = capsys.readouterr().out
    assert "conflicting 5 + rejected 0" in out and "old values in reading_revisions" in out
    engine = sa.create_engine(f"sqlite:///{home / 'readings.db'}")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM reading_revisions")).scalar_one() == 5


def test_a_symbolic_link_is_a_rejected_file_and_never_followed(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    objects = LocalObjects(home / "objects")
    objects.put("incoming/good.csv", to_csv_bytes(generate_readings(2, 20, seed=2)))
    outside = home / "outside.csv"
    outside.write_bytes(to_csv_bytes(generate_readings(2, 20, seed=9)))
    os.symlink(outside, home / "objects" / "incoming" / "link.csv")
    assert main(["ingest", "incoming/link.csv", "incoming/good.csv"]) == EXIT_REJECTED
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("incoming/link.csv: rejected:") and "symbolic link" in out
    assert _loaded(home) == 20 and outside.exists()


def test_a_bare_cr_in_the_first_data_line_neither_crashes_the_run_nor_blocks_the_next_file(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    objects = LocalObjects(home / "objects")
    header, first, *rest = to_csv_bytes(generate_readings(2, 40, seed=5)).split(b"\n")
    objects.put("incoming/a-cr.csv", b"\n".join([header, first + b"\r" + rest[0], *rest[1:]]))
    objects.put("incoming/b-good.csv", to_csv_bytes(generate_readings(2, 40, seed=6)))
    status = main(["ingest", "incoming/a-cr.csv", "incoming/b-good.csv"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "incoming/a-cr.csv: processed, read 40 = loaded 40" in out
    assert "incoming/b-good.csv: processed, read 40 = loaded 40" in out
