"""Issue 23, files in flight and listing at scale: a local file is handed out only once it has settled, a file
that changes while it is read keeps nothing and is read again whole, dot-files load like any other file,
and the sensor's cursor stays the same size however many files went through it."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hostile_rows import KEY, cells, expected, fresh, header, line, stored

from mfd.ingestion import incoming
from mfd.ingestion import load as ingest
from mfd.ingestion.incoming import IncomingCursor, look
from mfd.storage.objects import PROCESSED, LocalObjects, ObjectChanged, Objects, archive_key


def _body(rows: list[dict[str, str]], with_header: bool = True) -> bytes:
    return ("\n".join(([header()] if with_header else []) + [line(v) for v in rows]) + "\n").encode()


def test_a_file_appended_while_it_is_read_keeps_nothing_and_is_read_again_whole(
    tmp_path: Path, readings_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects, engine = LocalObjects(tmp_path / "objects"), fresh(readings_url)
    first, later = [cells(i) for i in range(300)], [cells(i) for i in range(300, 350)]
    objects.put(KEY, _body(first))
    path = tmp_path / "objects" / KEY

    def writer_appends(name: str) -> None:
        if name == "before_copy":  # the first block is read, the rest is not
            with path.open("ab") as out:
                out.write(_body(later, with_header=False))

    monkeypatch.setattr(ingest, "pause_point", writer_appends)
    with pytest.raises(ObjectChanged, match="changed while it was read"):
        ingest.ingest_object(objects, engine, KEY, chunk_bytes=4 << 10)
    assert stored(engine) == [] and objects.exists(KEY) and not objects.list(PROCESSED)
    monkeypatch.undo()
    [version] = objects.list("incoming/")
    report = ingest.ingest_object(objects, engine, KEY, chunk_bytes=4 << 10)
    assert (report.status, report.read, report.loaded) == ("processed", 350, 350)
    assert stored(engine) == sorted(map(expected, first + later))
    assert report.filed_as == archive_key(KEY, PROCESSED, version.etag)
    assert objects.get(report.filed_as) == _body(first) + _body(later, with_header=False)


def test_the_sensor_hands_out_a_file_only_once_it_has_settled(objects: Objects) -> None:
    """Local: written in place, it may still be growing. S3: a put is atomic, but its one-second
    LastModified must pass, or a later upload in the same second could sort before the cursor."""
    objects.put("incoming/a.csv", _body([cells(0)]))
    [obj] = objects.list("incoming/")
    early = look(objects, IncomingCursor(), obj.last_modified + objects.settle / 2)
    assert early.new == [] and early.unsettled == 1 and early.cursor.after is None
    settled = look(objects, IncomingCursor(), obj.last_modified + objects.settle)
    assert [o.key for o in settled.new] == ["incoming/a.csv"]


def test_a_dot_file_is_handed_out_and_loaded_like_any_other(tmp_path: Path, readings_url: str) -> None:
    objects, engine = LocalObjects(tmp_path / "objects"), fresh(readings_url)
    rows = [cells(i) for i in range(20)]
    objects.put("incoming/.export.csv", _body(rows))
    tick = look(objects, IncomingCursor(), datetime.now(UTC) + timedelta(seconds=10))
    assert [o.key for o in tick.new] == ["incoming/.export.csv"]
    report = ingest.ingest_object(objects, engine, "incoming/.export.csv")
    assert (report.status, report.loaded) == ("processed", 20) and stored(engine) == sorted(
        map(expected, rows)
    )


def test_the_cursor_stays_small_however_many_files_went_through(tmp_path: Path) -> None:
    objects = LocalObjects(tmp_path / "objects")
    root = tmp_path / "objects" / "incoming"
    root.mkdir(parents=True)
    for i in range(3000):
        (root / f"f{i:05d}.csv").write_bytes(b"x\n")
    now = datetime.now(UTC) + timedelta(seconds=10)
    cursor, handed, sizes = IncomingCursor(), [], []
    for tick in range(6):
        found = look(objects, cursor, now + timedelta(seconds=5 * tick), limit=500)
        handed += [o.key for o in found.new]
        cursor = IncomingCursor.parse(found.cursor.dumps())
        sizes.append(len(found.cursor.dumps()))
    assert len(handed) == len(set(handed)) == 3000  # each handed out once, none skipped
    assert max(sizes) < 2_000  # a position and a mark per tick, never one entry per file
    for name in os.listdir(root):  # all processed: the next walk starts where this one ended
        (root / name).unlink()
    assert look(objects, cursor, now + timedelta(minutes=1)).new == []
    assert incoming.waiting(objects) == []


def test_mfd_ingest_leaves_a_file_that_changes_between_its_two_listings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from mfd.cli import ingest as cli

    objects = LocalObjects(tmp_path / "objects")
    objects.put("incoming/a.csv", _body([cells(0)]))
    objects.put("incoming/b.csv", _body([cells(1)]))
    waited: list[float] = []

    def writer_appends_meanwhile(seconds: float) -> None:  # the wait between the listings
        waited.append(seconds)
        with (tmp_path / "objects" / "incoming" / "a.csv").open("ab") as out:
            out.write(_body([cells(2)], with_header=False))

    monkeypatch.setattr(cli.time, "sleep", writer_appends_meanwhile)
    tally = cli.Tally()
    assert cli.settled_keys(objects, timedelta(seconds=5), tally) == ["incoming/b.csv"]
    assert tally.waiting == ["incoming/a.csv"] and len(waited) == 1 and 0 < waited[0] <= 5
    assert "incoming/a.csv: left in incoming/: it changed between two listings" in capsys.readouterr().out
