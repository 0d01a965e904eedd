"""NASA C-MAPSS text files as readings CSVs of the `cmapss` profile, plus one failure record per training engine.

NASA's files (`train_FD00x.txt`, `test_FD00x.txt`; FD001-FD004 share the format) are space-separated with
trailing spaces, no header, 26 columns: unit number, cycle (1, 2, ...), operational settings 1-3, sensors
1-21. Each engine becomes a machine named `<subset>-<split>-<unit:03d>` (`FD001-test-007`); cycle `c` is
read at `START + (c - 1) h` (cycle 1 at 2020-01-01T00:00:00Z). The readings CSV header is the profile's
machine, timestamp and segment columns, then its sensors in order (the three settings, then the 21 sensors):
`engine,timestamp,subset,setting_1,...`. Numbers are copied as text, so a stored value is the source cell.

Files hold whole engines, in unit order, up to `FILE_ROWS` readings each (an engine longer than that gets a
file of its own); keys are fixed by subset, split and part number, so converting again rewrites the same
keys. A training engine ran to failure at its last cycle: one maintenance record each (`outcome` `failure`),
all in one CSV under `incoming/maintenance/`. Pure: returns keys and bytes; `mfd import cmapss` stores them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mfd.errors import MfdError
from mfd.profiles import Profile

# A number as NASA writes it (and Arrow reads it): sign, digits, a decimal point, an exponent; no nan/inf.
NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
SUBSET = re.compile(r"FD00[1-9]")  # FD001-FD004 today; the format is the same for any further subset
SPLITS: tuple[str, ...] = ("train", "test")
COLUMNS = 26  # unit, cycle, 3 settings, 21 sensors
VALUES = COLUMNS - 2
START = datetime(2020, 1, 1, tzinfo=UTC)
CYCLE = timedelta(hours=1)
FILE_ROWS = 10_000
# Keys are relative to the object store's incoming/ prefix (mfd.storage.objects.INCOMING, prepended by the
# command: the core imports no storage); maintenance records go where mfd.ingestion.maintenance reads them.
MAINTENANCE_FOLDER = "maintenance/"
FAILURE_OUTCOME = "failure"  # the outcome of a profile that names no failure modes
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "data" / "cmapss"  # FD001, vendored


class CmapssError(MfdError):
    """NASA's files are missing or malformed: one line naming the file (and line)."""


@dataclass(frozen=True)
class Engine:
    """One engine's cycles in file order: `cycles[i]` is read with the 24 value cells `values[i]`."""

    unit: int
    cycles: list[int] = field(default_factory=list)
    values: list[list[str]] = field(default_factory=list)


@dataclass(frozen=True)
class Converted:
    """What a conversion produces: keys under incoming/ and their bytes, and the counts for the summary."""

    engines: int
    rows: int
    readings: list[tuple[str, bytes]]
    maintenance: list[tuple[str, bytes]]
    rul: Path | None = None


def _positive_int(cell: str, where: str, what: str) -> int:
    if not cell.isdigit() or int(cell) < 1:
        raise CmapssError(f"{where}: {what} {cell!r} is not a positive whole number")
    return int(cell)


def parse_text(text: str, name: str) -> dict[int, Engine]:
    """The engines of one NASA file (its text), by unit number; CmapssError naming `name` and the line."""
    engines: dict[int, Engine] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        cells = line.split()
        if not cells:
            continue
        where = f"{name} line {number}"
        if len(cells) != COLUMNS:
            raise CmapssError(f"{where}: {len(cells)} columns, expected {COLUMNS} (unit, cycle, 24 values)")
        unit = _positive_int(cells[0], where, "unit")
        cycle = _positive_int(cells[1], where, "cycle")
        bad = next((i for i, cell in enumerate(cells[2:], start=3) if not NUMBER.fullmatch(cell)), None)
        if bad is not None:
            raise CmapssError(f"{where}: column {bad} {cells[bad - 1]!r} is not a number")
        engine = engines.setdefault(unit, Engine(unit))
        if engine.cycles and cycle <= engine.cycles[-1]:
            raise CmapssError(f"{where}: unit {unit} cycle {cycle} does not follow cycle {engine.cycles[-1]}")
        engine.cycles.append(cycle)
        engine.values.append(cells[2:])
    if not engines:
        raise CmapssError(f"{name}: no readings (an empty file)")
    return dict(sorted(engines.items()))


def read_split(directory: Path, subset: str, split: str) -> tuple[Path, dict[int, Engine]]:
    """`<split>_<subset>.txt` under `directory`, parsed."""
    path = Path(directory) / f"{split}_{subset}.txt"
    if not path.is_file():
        raise CmapssError(f"{path}: no such file (NASA's {split}_{subset}.txt)")
    try:
        text = path.read_text(encoding="ascii")
    except (UnicodeDecodeError, OSError) as exc:
        raise CmapssError(f"{path}: cannot be read as NASA's text format ({exc})") from exc
    return path, parse_text(text, str(path))


def read_rul(directory: Path, subset: str, engines: int) -> Path | None:
    """`RUL_<subset>.txt` when present, checked: one whole number per test engine, in unit order."""
    path = Path(directory) / f"RUL_{subset}.txt"
    if not path.is_file():
        return None
    try:
        lines = [line.strip() for line in path.read_text(encoding="ascii").splitlines()]
    except (UnicodeDecodeError, OSError) as exc:
        raise CmapssError(f"{path}: cannot be read as NASA's text format ({exc})") from exc
    for number, cell in enumerate(lines, start=1):
        if cell and not cell.isdigit():
            raise CmapssError(f"{path} line {number}: {cell!r} is not a whole number of cycles")
    values = [cell for cell in lines if cell]
    if len(values) != engines:
        raise CmapssError(f"{path}: {len(values)} values, expected one per test engine ({engines})")
    return path


def engine_name(subset: str, split: str, unit: int) -> str:
    return f"{subset}-{split}-{unit:03d}"


def cycle_time(cycle: int) -> datetime:
    return START + (cycle - 1) * CYCLE


def _stamp(cycle: int) -> str:
    """The generator's CSV timestamp layout (`2020-01-01 00:00:00.000Z`), read by ingestion's fast path."""
    return f"{cycle_time(cycle):%Y-%m-%d %H:%M:%S}.000Z"


def header(profile: Profile) -> list[str]:
    """The readings CSV header: the profile's machine, timestamp and segment columns, then its sensors."""
    if len(profile.sensors) != VALUES or not profile.segment_column:
        raise CmapssError(
            f"profile {profile.name}: C-MAPSS has {VALUES} values per cycle and a subset attribute; the "
            f"profile declares {len(profile.sensors)} sensors and segment {profile.segment_column!r}"
        )
    return [profile.machine_column, profile.timestamp_column, profile.segment_column, *profile.sensor_columns]


def _csv(head: list[str], engines: list[Engine], subset: str, split: str) -> bytes:
    lines = [",".join(head)]
    for engine in engines:
        name = engine_name(subset, split, engine.unit)
        for cycle, values in zip(engine.cycles, engine.values, strict=True):
            lines.append(f"{name},{_stamp(cycle)},{subset},{','.join(values)}")
    return ("\n".join(lines) + "\n").encode()


def readings_files(
    engines: dict[int, Engine], profile: Profile, subset: str, split: str, file_rows: int = FILE_ROWS
) -> list[tuple[str, bytes]]:
    """The readings CSVs: whole engines in unit order, up to `file_rows` readings a file."""
    head = header(profile)
    groups: list[list[Engine]] = [[]]
    held = 0
    for engine in engines.values():
        if groups[-1] and held + len(engine.cycles) > file_rows:
            groups.append([])
            held = 0
        groups[-1].append(engine)
        held += len(engine.cycles)
    return [
        (f"cmapss-{subset}-{split}-{part:03d}.csv", _csv(head, group, subset, split))
        for part, group in enumerate(groups, start=1)
    ]


def maintenance_file(engines: dict[int, Engine], subset: str, split: str) -> tuple[str, bytes]:
    """One failure record per engine at its last cycle (machine_id,timestamp,outcome,work_order_id)."""
    lines = ["machine_id,timestamp,outcome,work_order_id"]
    for engine in engines.values():
        name = engine_name(subset, split, engine.unit)
        at = cycle_time(engine.cycles[-1])
        lines.append(f"{name},{at:%Y-%m-%dT%H:%M:%SZ},{FAILURE_OUTCOME},WO-cmapss-{name}")
    return f"{MAINTENANCE_FOLDER}cmapss-{subset}-{split}.csv", ("\n".join(lines) + "\n").encode()


def check_subset(subset: str, profile: Profile) -> None:
    if not SUBSET.fullmatch(subset):
        raise CmapssError(f"--subset {subset!r}: expected FD001, FD002, FD003 or FD004")
    if subset not in profile.segments:
        allowed = ", ".join(profile.segments)
        raise CmapssError(
            f"--subset {subset}: profile {profile.name} allows {profile.segment_column} {allowed}"
        )


def convert(
    directory: Path, subset: str, split: str, profile: Profile, file_rows: int = FILE_ROWS
) -> Converted:
    """Everything one split of one subset becomes (see the module doc); nothing is written here."""
    if split not in SPLITS:
        raise CmapssError(f"--split {split!r}: expected train or test")
    check_subset(subset, profile)
    _, engines = read_split(directory, subset, split)
    readings = readings_files(engines, profile, subset, split, file_rows)
    maintenance = [maintenance_file(engines, subset, split)] if split == "train" else []
    rul = read_rul(directory, subset, len(engines)) if split == "test" else None
    rows = sum(len(e.cycles) for e in engines.values())
    return Converted(len(engines), rows, readings, maintenance, rul)
