"""The `/predict` request and response: one reading per item, checked against the rules of `mfd.validation`.
The request's field names are the plant profile's source names (its segment attribute and sensors); a
validated reading carries the canonical names (`mfd.profiles`)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Annotated, Any, Literal, NotRequired

import pandas as pd
from pydantic import ConfigDict, Field, TypeAdapter, ValidationError, with_config
from typing_extensions import TypedDict

from mfd.errors import MfdError
from mfd.features import WINDOW_SPEC
from mfd.profiles import MACHINE, NO_SEGMENT, TIMESTAMP
from mfd.schema import PROFILE, SEGMENT_COLUMN, SENSOR_COLUMNS
from mfd.validation import READING_RULES, Rule

# Most readings one `/explain` request may carry: SHAP costs per reading.
EXPLAIN_LIMIT = 100

# What a caller sends to score one reading: the segment (where the profile has one) and the sensors.
READING_FIELDS: tuple[str, ...] = (*((SEGMENT_COLUMN,) if PROFILE.segment_column else ()), *SENSOR_COLUMNS)
# Where the profile declares windows a reading may name its machine and time: a request's readings of one
# machine, in list (or time) order, are its recent history, and each is scored with its window features.
HISTORY_FIELDS: tuple[str, ...] = (MACHINE, TIMESTAMP) if WINDOW_SPEC is not None else ()
# Request field -> canonical name, where the profile's name differs (e.g. a pump's `pump_model`).
_RENAMED: dict[str, str] = {
    PROFILE.source_name(c): c for c in (*READING_FIELDS, *HISTORY_FIELDS) if PROFILE.source_name(c) != c
}


def _field(rule: Rule) -> Any:
    if rule.kind == "category":
        return Literal[rule.allowed]  # type: ignore[valid-type]
    r = rule.range
    assert r is not None, "a served field is a category or a number with a range"
    limits = Field(
        ge=r.low, le=r.high, allow_inf_nan=False, strict=True, description=f"{r.unit}, {r.low}-{r.high}"
    )
    return Annotated[float, limits]


def reading_type(rules: Mapping[str, Rule] = READING_RULES) -> type:
    """The `Reading` request item built from the rules (`mfd.validation`): a TypedDict, not a model, since
    validating 1,000 readings costs a third of what BaseModel instances cost; unknown fields are refused."""
    fields = {PROFILE.source_name(column): _field(rules[column]) for column in READING_FIELDS}
    fields |= {PROFILE.source_name(column): NotRequired[str] for column in HISTORY_FIELDS}
    reading = TypedDict("Reading", fields)  # type: ignore[misc]
    reading.__doc__ = f"One reading of plant profile {PROFILE.name} to score: {', '.join(fields)}."
    return with_config(ConfigDict(extra="forbid"))(reading)


Reading = reading_type()


class Prediction(TypedDict):
    """The champion's answer for one reading: label is 1 when probability >= threshold, the version's
    threshold for the reading's machine type (cost-optimal per type, `mfd.alerts.costs`)."""

    probability: float
    label: int
    threshold: float
    machine_type: str
    model_name: str
    model_version: str
    rul_estimate: float | None  # remaining useful life (the profile's time unit); None: no RUL head


class Explained(Prediction):
    """A prediction with its explanation: the top SHAP features (`attribution` in the model's output,
    `shap_output`) and the physics rule the reading is nearest to, with its relative margin."""

    top_features: list[dict[str, Any]]
    nearest_rule: dict[str, Any]
    explainer: str
    shap_output: str


class RejectedRequest(MfdError):
    """A request the service refuses before any model call; `status` is the HTTP status to answer."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.UNPROCESSABLE_ENTITY) -> None:
        super().__init__(message)
        self.status = status


_readings = TypeAdapter(list[Reading])  # type: ignore[valid-type]


def _where(loc: tuple[int | str, ...]) -> str:
    index, *fields = loc if loc else ("?",)
    return f"readings[{index}]" + "".join(f".{f}" for f in fields)


def describe(error: ValidationError, limit: int = 10) -> str:
    """One line per bad field: where it is, why it is rejected, and the value sent (first `limit`)."""
    lines = []
    for e in error.errors(include_url=False)[:limit]:
        got = "" if e["type"] == "missing" else f" (got {e['input']!r})"
        lines.append(f"{_where(e['loc'])}: {e['msg']}{got}")
    more = error.error_count() - limit
    return "; ".join(lines) + (f"; and {more} more" if more > 0 else "")


def _check_times(readings: list[dict[str, Any]]) -> None:
    """RejectedRequest (422) naming the first reading whose `timestamp` is no ISO 8601 time."""
    for i, r in enumerate(readings):
        if r.get(TIMESTAMP) is not None:
            try:
                pd.Timestamp(r[TIMESTAMP])
            except ValueError:
                name = PROFILE.source_name(TIMESTAMP)
                raise RejectedRequest(
                    f"readings[{i}].{name}: not an ISO 8601 time (got {r[TIMESTAMP]!r})"
                ) from None


def parse_readings(data: object, max_readings: int) -> list[Reading]:
    """Validate a decoded JSON list of readings; RejectedRequest (422, or 413 when too many) otherwise."""
    if not isinstance(data, list):
        raise RejectedRequest(f"readings must be a list of readings, got {type(data).__name__}")
    if not data:
        raise RejectedRequest("readings is empty: send at least one reading")
    if len(data) > max_readings:
        raise RejectedRequest(
            f"{len(data)} readings in one request; the limit is {max_readings} (MFD_MAX_READINGS; "
            f"{EXPLAIN_LIMIT} for /explain)",
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        )
    try:
        readings = _readings.validate_python(data)
    except ValidationError as exc:
        raise RejectedRequest(describe(exc)) from exc
    if _RENAMED:
        readings = [{_RENAMED.get(k, k): v for k, v in r.items()} for r in readings]
    if HISTORY_FIELDS:
        _check_times(readings)
    if not PROFILE.segment_column:
        readings = [{**r, SEGMENT_COLUMN: NO_SEGMENT} for r in readings]
    return readings
