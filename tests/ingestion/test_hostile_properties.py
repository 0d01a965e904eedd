"""Issue 23, property-based: generated files mixing good rows with every class of hostile input (control
characters, repeated and reordered headers, words for times, invisible key characters, bare CRs, an unclosed
last quote), cut into blocks anywhere, and files with arbitrary bytes spliced in. Each file goes into SQLite
and PostgreSQL: every stored value equals the source cell it came from, nothing is stored twice, the counts
add up, and both databases hold the same rows."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hostile_rows import COLUMNS, KEY, MACHINE, NUMBERS, STAMP, cells, expected, fresh, header, line, stored
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from mfd.ingestion import load as ingest
from mfd.storage.objects import LocalObjects

SETTINGS = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
GOOD = ("good", "stray_quote")
BAD = ("control", "word_time", "invisible_key")
CONTROLS = ["\x00", "\x01", "\x08", "\t", "\x0b", "\x1b", "\x1f", "\x7f"]
WORDS = ["now", "today", "tomorrow", "epoch", "infinity", "-infinity", "allballs"]
INVISIBLE_KEYS = [" M-1", "M-1 ", "M-1\u200b", "\ufeffM-1", "M\u00a01", "M-\u20601", "\u200eM-1"]


@st.composite
def hostile_files(draw: st.DrawFn) -> dict:
    """A file of these classes, with what it must store: (good rows' expected values, bad row count)."""
    kinds = draw(st.lists(st.sampled_from(GOOD + BAD + ("same_header",)), min_size=1, max_size=40))
    zone = draw(st.sampled_from(["Z", ""]))
    reorder_at = draw(st.none() | st.integers(0, len(kinds)))
    swapped = list(COLUMNS)
    a, b = COLUMNS.index(NUMBERS[0]), COLUMNS.index(NUMBERS[-1])
    swapped[a], swapped[b] = swapped[b], swapped[a]
    lines, good, bad, aside = [header()], [], 0, False
    for i, kind in enumerate(kinds):
        if i == reorder_at:
            lines.append(header(swapped))
            aside = True
        if kind == "same_header":
            if (
                not aside
            ):  # a header again in the first order is skipped (after a reordered one: set aside too)
                lines.append(header())
            continue
        values = cells(i, machine=f"M-{draw(st.integers(1, 3))}", step=draw(st.integers(0, 90)))
        values[STAMP] = values[STAMP].removesuffix("Z") + zone
        if kind == "stray_quote":
            values[MACHINE] = values[MACHINE].replace("-", '-"', 1)
        elif kind == "control":
            column = draw(st.sampled_from(COLUMNS))
            at = draw(st.integers(0, len(values[column])))
            values[column] = values[column][:at] + draw(st.sampled_from(CONTROLS)) + values[column][at:]
        elif kind == "word_time":
            values[STAMP] = draw(st.sampled_from(WORDS))
        elif kind == "invisible_key":
            values[MACHINE] = draw(st.sampled_from(INVISIBLE_KEYS)).replace("M-1", values[MACHINE])
        lines.append(line(values, swapped if aside else None))
        if kind in GOOD and not aside:
            good.append(expected(values))
        else:
            bad += 1
    if draw(st.booleans()):  # the file ends inside a quote opened on its last line
        lines.append('"' + line(cells(len(kinds) + 1)))
        bad += 1
    ends = draw(st.lists(st.sampled_from(["\n", "\r\n", "\r"]), min_size=len(lines), max_size=len(lines)))
    body = "".join(text + end for text, end in zip(lines, ends, strict=True))
    if draw(st.booleans()):
        body = body.removesuffix(ends[-1])
    return {"body": body.encode(), "good": sorted(good), "bad": bad, "chunk": draw(st.integers(64, 4096))}


def _load(engine: Engine, body: bytes, chunk: int) -> ingest.IngestReport:
    with tempfile.TemporaryDirectory() as tmp:
        objects = LocalObjects(Path(tmp))
        objects.put(KEY, body)
        return ingest.ingest_object(objects, engine, KEY, chunk_bytes=chunk)


def _adds_up(report: ingest.IngestReport) -> bool:
    return report.read == report.loaded + report.duplicate + report.conflicting + report.rejected


@SETTINGS
@given(case=hostile_files())
def test_hostile_files_store_exactly_their_good_rows_on_both_databases(
    tmp_path: Path, pg_url: str, case: dict
) -> None:
    engines = [fresh(f"sqlite:///{tmp_path / 'readings.db'}"), fresh(pg_url)]
    for engine in engines:
        report = _load(engine, case["body"], case["chunk"])
        assert _adds_up(report)
        assert stored(engine) == case["good"]  # every value its source cell's, each row once
        if case["good"]:
            assert report.status == "processed"
            assert (report.read, report.loaded, report.rejected) == (
                len(case["good"]) + case["bad"],
                len(case["good"]),
                case["bad"],
            )
        else:
            assert report.status == "rejected" and report.loaded == 0
        engine.dispose()


@st.composite
def spliced_files(draw: st.DrawFn) -> dict:
    """A valid file with arbitrary bytes spliced in (or replacing it whole)."""
    rows = [line(cells(i, step=draw(st.integers(0, 90)))) for i in range(draw(st.integers(0, 30)))]
    body = "\n".join([header(), *rows]).encode() + b"\n"
    junk = draw(st.binary(max_size=200))
    if draw(st.integers(0, 9)) == 0:
        body = junk
    else:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + junk + body[at:]
    return {"body": body, "chunk": draw(st.integers(64, 4096))}


@SETTINGS
@given(case=spliced_files())
def test_any_bytes_give_a_report_never_a_crash_and_both_databases_agree(
    tmp_path: Path, pg_url: str, case: dict
) -> None:
    engines = [fresh(f"sqlite:///{tmp_path / 'readings.db'}"), fresh(pg_url)]
    reports = [_load(engine, case["body"], case["chunk"]) for engine in engines]
    assert all(map(_adds_up, reports))
    assert reports[0].status == reports[1].status and reports[0].loaded == reports[1].loaded
    assert stored(engines[0]) == stored(engines[1])
    for engine in engines:
        engine.dispose()
