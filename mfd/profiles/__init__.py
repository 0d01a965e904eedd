"""The plant profile: one YAML file declares a plant's readings, and every stage derives from it.

A profile names the source columns of the machine key, the timestamp, the categorical attributes, the
sensors (unit, physical range), the label (a 0/1 column and/or failure records), the horizon, plant-specific
derived features and the generator. The platform keeps four canonical names inside (`CANONICAL`): the
source's machine, timestamp, segment attribute and label columns are renamed to them at the edges (ingest,
`/predict`, generators), so stores and models of any profile share one layout; sensor, derived and
peripheral columns keep the profile's own names. `MFD_PROFILE` (a path, or a shipped name) selects the
profile a process runs with; it is read once per process (`active()`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd
import yaml

from mfd.errors import MfdError
from mfd.profiles.expressions import Expression, ExpressionError

SHIPPED_DIR = Path(__file__).parent
DEFAULT_PROFILE = "ai4i"
ENV_VAR = "MFD_PROFILE"

# Canonical names inside the platform (tables, frames, models).
MACHINE, TIMESTAMP, SEGMENT, LABEL = "machine_id", "timestamp", "machine_type", "machine_failure"
CANONICAL: tuple[str, ...] = (MACHINE, TIMESTAMP, SEGMENT, LABEL)
# The segment of a profile without attributes: one value, the table's column default (not a reading value).
NO_SEGMENT = "all"
# Columns the platform adds to its own tables: a profile may not name a sensor like them.
RESERVED: frozenset[str] = frozenset({*CANONICAL, "id", "source", "label_source", "probability", "label"})
GENERATORS: tuple[str, ...] = ("ai4i", "generic")
# Sensor, derived, peripheral and failure-mode names become table columns and expression names: identifiers,
# no longer than PostgreSQL keeps (63 bytes).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_TOP_KEYS = frozenset(
    {
        "name",
        "description",
        "machine",
        "timestamp",
        "attributes",
        "sensors",
        "label",
        "failures",
        "horizon",
        "windows",
        "derived",
        "peripheral",
        "generator",
        "costs",
        "rul_cap",
        "lead",
        "debounce",
        "probability_floor",
        "false_alarm_budget",
    }
)
COST_KINDS: tuple[str, ...] = ("missed_failure", "false_stop", "late_alarm")
# Example costs of a segment whose profile gives none (one currency unit).
DEFAULT_COSTS: dict[str, float] = {"missed_failure": 10_000.0, "false_stop": 500.0, "late_alarm": 4_000.0}


class ProfileError(MfdError):
    """A profile that cannot run: the message names the file, the key and what is wrong, on one line."""


@dataclass(frozen=True)
class Sensor:
    """A numeric column: its unit and inclusive physical range."""

    name: str
    unit: str
    min: float
    max: float


@dataclass(frozen=True)
class Derived:
    """A plant-specific feature computed from the sensors."""

    name: str
    expression: Expression
    unit: str


@dataclass(frozen=True)
class Profile:
    """A plant's readings as declared in its YAML file (see docs/profiles.md)."""

    name: str
    description: str
    machine_column: str
    timestamp_column: str
    segment_column: str | None  # the source name of the attribute thresholds and costs are set per
    segments: tuple[str, ...]
    sensors: tuple[Sensor, ...]
    label_column: str | None
    failure_records: str | None
    failure_modes: tuple[str, ...]
    horizon: pd.Timedelta
    windows: tuple[int, ...]
    derived: tuple[Derived, ...]
    peripheral: tuple[Sensor, ...]
    generator: str
    costs: dict[str, dict[str, float]] = field(default_factory=dict, compare=False)
    # True when the YAML declares `windows`: only then are machine-window features model inputs (mfd.features).
    windows_declared: bool = False
    # Early warning (docs/early_warning.md): the remaining-useful-life cap (None: no RUL head), the lead a
    # warning needs to count (None: half the horizon), readings in a row above the threshold that raise an
    # alarm, the least probability that alarms whatever the threshold, and false alarms per machine-day allowed.
    rul_cap: pd.Timedelta | None = None
    lead: pd.Timedelta | None = None
    debounce: int = 1
    probability_floor: float = 0.0
    false_alarm_budget: float | None = None
    digest: str = field(default="", compare=False)
    path: str = field(default="", compare=False)

    @property
    def sensor_columns(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sensors)

    @property
    def derived_columns(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.derived)

    @property
    def source_names(self) -> dict[str, str]:
        """Canonical name -> the source's column name, for the columns renamed at the edges."""
        names = {MACHINE: self.machine_column, TIMESTAMP: self.timestamp_column, LABEL: self.label_column}
        if self.segment_column:
            names[SEGMENT] = self.segment_column
        return {canonical: source for canonical, source in names.items() if source}

    @property
    def to_canonical(self) -> dict[str, str]:
        """Source column name -> canonical name (identity for the sensors)."""
        return {source: canonical for canonical, source in self.source_names.items()}

    def source_name(self, column: str) -> str:
        """The name a file or a request uses for a canonical or sensor column."""
        return self.source_names.get(column, column)

    @property
    def warning_lead(self) -> pd.Timedelta:
        """How long before a failure a warning must come to count: `lead`, else half the horizon."""
        return self.lead if self.lead is not None else self.horizon / 2

    @property
    def run_to_failure(self) -> bool:
        """Machines run to failure: labels come from failure records alone (no label column), so readings
        form per-machine series ending in failures (C-MAPSS), unlike snapshot data (AI4I)."""
        return self.failure_records is not None and self.label_column is None

    def stamp(self) -> str:
        """`name@digest12`: what a store and a registered model record of the profile."""
        return f"{self.name}@{self.digest[:12]}"


def _fail(where: str, key: str, what: str) -> ProfileError:
    return ProfileError(f"profile {where}: {key}: {what}")


def _mapping(raw: object, where: str, key: str) -> dict:
    if not isinstance(raw, dict):
        raise _fail(where, key, f"expected a mapping, got {type(raw).__name__}")
    return raw


def _no_unknown(body: dict, where: str, key: str, allowed: tuple[str, ...]) -> None:
    unknown = sorted(str(k) for k in body if k not in allowed)
    if unknown:
        prefix = f"{key}." if key else ""
        raise _fail(where, f"{prefix}{unknown[0]}", f"unknown key (allowed: {', '.join(allowed)})")


def _identifier(name: object, where: str, key: str) -> str:
    """A column name the tables and expressions can hold: letters, digits, _, not starting with a digit."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise _fail(where, key, f"{name!r} is not a column name (letters, digits and _, at most 63)")
    return name


def _unit(spec: dict, where: str, key: str) -> str:
    unit = spec.get("unit", "")
    if unit is None:
        return ""
    if not isinstance(unit, str | int | float) or isinstance(unit, bool):
        raise _fail(where, f"{key}.unit", f"expected a unit name, got {unit!r}")
    return str(unit)


def _column(raw: dict, where: str, key: str, *, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    body = _mapping(value, where, key)
    _no_unknown(body, where, key, ("column",))
    name = body.get("column")
    if name is None and not required:
        return None
    if not isinstance(name, str) or not name.strip():
        raise _fail(where, f"{key}.column", "expected a column name")
    return name.strip()


def _number(raw: dict, where: str, key: str, name: str) -> float:
    value = raw.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"{key}.{name}", f"expected a finite number, got {value!r}")
    return float(value)


def _sensors(raw: object, where: str, key: str) -> tuple[Sensor, ...]:
    sensors = []
    for name, body in _mapping(raw, where, key).items():
        _identifier(name, where, f"{key}.{name}")
        spec = _mapping(body, where, f"{key}.{name}")
        _no_unknown(spec, where, f"{key}.{name}", ("unit", "min", "max"))
        low, high = _number(spec, where, f"{key}.{name}", "min"), _number(spec, where, f"{key}.{name}", "max")
        if low > high:
            raise _fail(where, f"{key}.{name}", f"min {low:g} above max {high:g}")
        sensors.append(Sensor(name, _unit(spec, where, f"{key}.{name}"), low, high))
    return tuple(sensors)


def _attributes(raw: object, where: str) -> tuple[str | None, tuple[str, ...]]:
    if raw is None or raw == {}:
        return None, (NO_SEGMENT,)
    attributes = _mapping(raw, where, "attributes")
    if len(attributes) > 1:
        names = ", ".join(map(str, attributes))
        raise _fail(where, "attributes", f"one attribute (the segment) is supported; got {names}")
    ((name, body),) = attributes.items()
    spec = _mapping(body, where, f"attributes.{name}")
    _no_unknown(spec, where, f"attributes.{name}", ("values",))
    values = spec.get("values")
    if not isinstance(values, list) or not values or len(set(map(str, values))) != len(values):
        raise _fail(where, f"attributes.{name}.values", "expected a list of distinct values")
    return str(name), tuple(str(v) for v in values)


def _horizon(raw: object, where: str) -> pd.Timedelta:
    return _duration(raw if raw is not None else "2h", where, "horizon")


def _duration(raw: object, where: str, key: str) -> pd.Timedelta:
    """A positive duration with a unit ('30 h', '2h', '45min')."""
    if (
        isinstance(raw, bool)
        or isinstance(raw, int | float)
        or (isinstance(raw, str) and not re.search(r"[A-Za-z]", raw))
    ):
        raise _fail(where, key, f"{raw!r} has no unit (e.g. '30 h', '2h', '45min')")
    try:
        value = pd.Timedelta(str(raw).replace(" ", ""))
    except ValueError as exc:
        raise _fail(where, key, f"{raw!r} is not a duration (e.g. '30 h', '2h', '45min')") from exc
    if value <= pd.Timedelta(0):
        raise _fail(where, key, f"must be positive, got {raw!r}")
    return value


def _warning(body: dict, where: str, horizon: pd.Timedelta) -> dict[str, object]:
    """The early-warning keys: rul_cap, lead (at most the horizon), debounce, probability_floor and
    false_alarm_budget, each checked."""
    rul_cap, lead = body.get("rul_cap"), body.get("lead")
    out: dict[str, object] = {
        "rul_cap": None if rul_cap is None else _duration(rul_cap, where, "rul_cap"),
        "lead": None if lead is None else _duration(lead, where, "lead"),
    }
    if out["lead"] is not None and out["lead"] > horizon:
        raise _fail(where, "lead", f"{lead!r} is longer than the horizon ({horizon}): no warning could count")
    debounce = body.get("debounce", 1)
    if isinstance(debounce, bool) or not isinstance(debounce, int) or debounce < 1:
        raise _fail(where, "debounce", f"expected readings in a row (an integer >= 1), got {debounce!r}")
    out["debounce"] = debounce
    floor = body.get("probability_floor", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not 0.0 <= floor < 1.0:
        raise _fail(where, "probability_floor", f"expected a probability in [0, 1), got {floor!r}")
    out["probability_floor"] = float(floor)
    budget = body.get("false_alarm_budget")
    if budget is not None and (
        isinstance(budget, bool)
        or not isinstance(budget, int | float)
        or not math.isfinite(budget)
        or budget < 0
    ):
        raise _fail(
            where, "false_alarm_budget", f"expected false alarms per machine-day >= 0, got {budget!r}"
        )
    out["false_alarm_budget"] = None if budget is None else float(budget)
    return out


def _windows(raw: object, where: str) -> tuple[int, ...]:
    if raw is None:
        return (5, 15, 30)
    if not isinstance(raw, list) or not raw or not all(isinstance(w, int) and w > 1 for w in raw):
        raise _fail(where, "windows", f"expected a list of readings counts above 1, got {raw!r}")
    return tuple(sorted(set(raw)))


def _derived(raw: object, where: str, sensors: tuple[str, ...]) -> tuple[Derived, ...]:
    out = []
    for name, body in _mapping(raw or {}, where, "derived").items():
        _identifier(name, where, f"derived.{name}")
        spec = _mapping(body, where, f"derived.{name}")
        _no_unknown(spec, where, f"derived.{name}", ("expression", "unit"))
        try:
            expression = Expression(str(spec.get("expression", "")), allowed=sensors)
        except ExpressionError as exc:
            raise _fail(where, f"derived.{name}.expression", str(exc)) from exc
        out.append(Derived(name, expression, _unit(spec, where, f"derived.{name}")))
    return tuple(out)


def _costs(raw: object, where: str, segments: tuple[str, ...]) -> dict[str, dict[str, float]]:
    given = _mapping(raw or {}, where, "costs")
    unknown = sorted(set(map(str, given)) - set(segments))
    if unknown:
        raise _fail(where, f"costs.{unknown[0]}", f"not a segment value ({', '.join(segments)})")
    out = {}
    for segment in segments:
        body = _mapping(given.get(segment, DEFAULT_COSTS), where, f"costs.{segment}")
        extra = sorted(set(body) - set(COST_KINDS))
        if extra:
            raise _fail(
                where, f"costs.{segment}.{extra[0]}", f"unknown key (allowed: {', '.join(COST_KINDS)})"
            )
        out[segment] = {
            k: _number({**DEFAULT_COSTS, **body}, where, f"costs.{segment}", k) for k in COST_KINDS
        }
    return out


def _failures(raw: object, where: str) -> tuple[str | None, tuple[str, ...]]:
    if raw is None:
        return None, ()
    body = _mapping(raw, where, "failures")
    _no_unknown(body, where, "failures", ("records", "modes"))
    records = body.get("records")
    if records not in (None, "maintenance"):
        raise _fail(where, "failures.records", f"{records!r}: the records supported are 'maintenance'")
    modes = body.get("modes") or []
    if not isinstance(modes, list):
        raise _fail(where, "failures.modes", "expected a list of outcome names")
    return records, tuple(_identifier(m, where, f"failures.modes.{m}") for m in modes)


def _check_names(profile: Profile, where: str) -> None:
    seen: dict[str, str] = {}  # lower-cased name -> the key naming it (SQLite folds column names' case)
    named = [
        ("machine.column", profile.machine_column),
        ("timestamp.column", profile.timestamp_column),
        ("attributes", profile.segment_column),
        ("label.column", profile.label_column),
        *((f"sensors.{s.name}", s.name) for s in profile.sensors),
        *((f"derived.{d.name}", d.name) for d in profile.derived),
        *((f"peripheral.{s.name}", s.name) for s in profile.peripheral),
        *((f"failures.modes.{m}", m) for m in profile.failure_modes),
    ]
    renamed = set(profile.source_names.values())
    for key, name in named:
        if name is None:
            continue
        if name.lower() in seen:
            other = seen[name.lower()]
            what = "is listed twice" if other == key else f"is also {other}"
            raise _fail(where, key, f"column {name!r} {what}")
        if name in RESERVED and name not in renamed:
            raise _fail(where, key, f"{name!r} is a reserved column name ({', '.join(sorted(RESERVED))})")
        seen[name.lower()] = key


def parse(raw: object, where: str) -> Profile:
    """The profile in `raw` (a loaded YAML document); ProfileError naming the key when it cannot run."""
    body = _mapping(raw, where, "(top level)")
    _no_unknown(body, where, "", tuple(sorted(_TOP_KEYS)))
    name = body.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _fail(where, "name", "expected the plant's name")
    sensors = _sensors(body.get("sensors") or {}, where, "sensors")
    if not sensors:
        raise _fail(where, "sensors", "a profile needs at least one sensor")
    segment, segments = _attributes(body.get("attributes"), where)
    label = _column(body, where, "label", required=False)
    records, modes = _failures(body.get("failures"), where)
    if label is None and records is None:
        raise _fail(where, "label", "declare a label column and/or failures: {records: maintenance}")
    horizon = _horizon(body.get("horizon"), where)
    generator = body.get("generator", "generic")
    if generator not in GENERATORS:
        raise _fail(where, "generator", f"{generator!r} is not one of {', '.join(GENERATORS)}")
    profile = Profile(
        name=name.strip(),
        description=str(body.get("description", "")),
        machine_column=_column(body, where, "machine") or MACHINE,
        timestamp_column=_column(body, where, "timestamp") or TIMESTAMP,
        segment_column=segment,
        segments=segments,
        sensors=sensors,
        label_column=label,
        failure_records=records,
        failure_modes=modes,
        horizon=horizon,
        windows=_windows(body.get("windows"), where),
        windows_declared="windows" in body,
        derived=_derived(body.get("derived"), where, tuple(s.name for s in sensors)),
        peripheral=_sensors(body.get("peripheral") or {}, where, "peripheral"),
        generator=generator,
        costs=_costs(body.get("costs"), where, segments),
        **_warning(body, where, horizon),
        digest=hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest(),
        path=where,
    )
    _check_names(profile, where)
    return profile


def resolve(name_or_path: str) -> Path:
    """A shipped profile's file (`ai4i`, `cmapss`) or the path given; ProfileError when neither exists."""
    shipped = SHIPPED_DIR / f"{name_or_path}.yaml"
    if "/" not in name_or_path and not name_or_path.endswith((".yaml", ".yml")) and shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = ", ".join(shipped_names())
    raise ProfileError(f"profile {name_or_path}: no such file, and not a shipped profile ({names})")


def shipped_names() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in SHIPPED_DIR.glob("*.yaml")))


def load(name_or_path: str) -> Profile:
    """The profile at a path or shipped under that name, checked."""
    path = resolve(name_or_path)
    where = path.stem if path.parent == SHIPPED_DIR else str(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        line = " ".join(str(exc).split())
        raise ProfileError(f"profile {where}: not valid YAML ({line})") from exc
    return parse(raw, where)


@cache
def shipped(name: str) -> Profile:
    """A shipped profile, loaded once per process (the AI4I physics and reference modules read `ai4i`)."""
    return load(name)


@cache
def active() -> Profile:
    """The profile this process runs with: `MFD_PROFILE` (default `ai4i`), read once."""
    return load(os.environ.get(ENV_VAR) or DEFAULT_PROFILE)
